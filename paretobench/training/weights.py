"""Weights taken from trained models: a whole run to continue, a tower, or a decoder transplanted
into another architecture (as a real VLM starts from a pretrained LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_weights(model, folder: Path, *, only: str = "") -> dict:
    """Copy a saved model's weights (all, or only those whose names start with ``only``) into
    ``model``; returns that run's training record."""
    from transformers import AutoModelForImageTextToText

    saved = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True).state_dict()
    if only:
        missing = [k for k in model.state_dict() if k.startswith(only) and k not in saved]
        if missing:
            raise ValueError(f"{folder}: no {only}* weights to take ({len(missing)} missing); another architecture?")
        model.load_state_dict({k: v for k, v in saved.items() if k.startswith(only)}, strict=False)
    else:
        model.load_state_dict(saved)
    return json.loads((folder / "training.json").read_text())


def transplant_decoder(model, tokenizer, folder: Path) -> dict:
    """Start ``model``'s language model from a trained one of the same sizes in ``folder`` (either
    architecture), the way a real VLM starts from a pretrained LLM: every decoder weight is
    copied, token embeddings and output rows are matched by token text (tokens the source lacks
    keep their initialisation), and weights the source lacks (Qwen2's q/k/v biases) start at 0,
    so on text alone the two decoders compute the same function. Returns the source's record.
    """
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    source = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    src_tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    src, dst = source.model.language_model, model.model.language_model
    a, b = src.config, dst.config
    sizes = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    differ = [f"{k} {getattr(a, k)} vs {getattr(b, k)}" for k in sizes if getattr(a, k) != getattr(b, k)]
    if differ:
        raise ValueError(f"{folder}: its decoder's sizes differ from this model's ({', '.join(differ)})")
    theirs = src.state_dict()
    with torch.no_grad():
        for name, weight in dst.state_dict().items():
            if name.startswith("embed_tokens."):
                continue
            if name in theirs:
                weight.copy_(theirs[name])
            elif name.endswith(".bias"):
                weight.zero_()
            else:
                raise ValueError(f"{folder}: its decoder has no {name}")
        src_vocab, shared = src_tok.get_vocab(), 0
        for token, i in tokenizer.get_vocab().items():
            if token in src_vocab:
                j = src_vocab[token]
                dst.embed_tokens.weight[i] = src.embed_tokens.weight[j]
                model.lm_head.weight[i] = source.lm_head.weight[j]
                shared += 1
    return {"tokens_shared": shared, "tokens": len(tokenizer), **json.loads((folder / "training.json").read_text())}
