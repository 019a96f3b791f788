"""Evaluate a VLM on VLMEvalKit-format samples: greedy answers, exact-match scoring, FLOPs.

The language model runs from input embeddings, so the visual tokens it sees can be chosen per
sample (``VisualSelect``): all of them (the model's own forward), a subset at their ORIGINAL
positions (the gapped position ids pruning keeps), or replaced altogether. Decoding is greedy
with a KV cache and continues from the last original position.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from paretobench.data.tsv import Sample
from paretobench.flops import DecoderShape, prefill_flops
from paretobench.scoring import accuracy, is_correct

# (sample, image features (Nv, D)) -> (features to feed (k, D), their visual-token slots (k,))
VisualSelect = Callable[[Sample, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class EvalResult:
    predictions: list[str]
    correct: list[bool]
    scores: dict  # accuracy, mean_of_categories, per_category, n, n_per_category
    visual_tokens: float  # mean visual tokens per sample before selection
    kept_visual_tokens: float  # mean visual tokens fed to the language model
    text_tokens: float
    llm_prefill_flops: float  # mean per sample, decoder layers only
    seconds: float


def chat_prompts(processor, samples: list[Sample]) -> list[str]:
    return [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt()}]}],
            add_generation_prompt=True,
        )
        for s in samples
    ]


@torch.no_grad()
def embed_batch(model, processor, samples: list[Sample], image_fn=None):
    """Processor inputs and the merged text+image input embeddings, (B, L, D)."""
    images = [image_fn(s) if image_fn else s.image() for s in samples]
    inputs = processor(images=images, text=chat_prompts(processor, samples), return_tensors="pt", padding=True)
    inputs = inputs.to(model.device)
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    feats = model.model.get_image_features(
        pixel_values=inputs["pixel_values"].to(model.dtype),
        vision_feature_layer=model.config.vision_feature_layer,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
    ).pooler_output
    return inputs, embeds, list(feats)


def left_pad(rows: list[torch.Tensor], value) -> torch.Tensor:
    length = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), length, *rows[0].shape[1:]), value)
    for i, r in enumerate(rows):
        out[i, length - r.shape[0] :] = r
    return out


@torch.no_grad()
def greedy_decode(model, embeds, attention_mask, position_ids, *, max_new_tokens: int, eos_id: int, pad_id: int):
    """Greedy tokens (B, T) from a prefill of ``embeds`` at ``position_ids`` (may be gapped)."""
    from transformers import DynamicCache

    lm, head, table = model.model.language_model, model.lm_head, model.get_input_embeddings()
    cache = DynamicCache()
    h = lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
           past_key_values=cache, use_cache=True).last_hidden_state  # fmt: skip
    token = head(h[:, -1]).argmax(-1)
    done = token == eos_id
    tokens, last = [token], position_ids.max(dim=1).values
    for step in range(1, max_new_tokens):
        if bool(done.all()):
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], 1)
        h = lm(inputs_embeds=table(token[:, None]), attention_mask=attention_mask,
               position_ids=(last + step)[:, None], past_key_values=cache, use_cache=True).last_hidden_state  # fmt: skip
        token = torch.where(done, torch.full_like(token, pad_id), head(h[:, -1]).argmax(-1))
        tokens.append(token)
        done |= token == eos_id
    return torch.stack(tokens, 1)


def _select_rows(embeds, inputs, feats, samples, select, image_token_id):
    """Per sample: drop/replace visual tokens; return left-padded embeds, mask, positions, counts."""
    rows_e, rows_m, rows_p, kept = [], [], [], []
    mask = inputs["attention_mask"]
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    for b, s in enumerate(samples):
        valid = mask[b].bool()
        e, ids, pos = embeds[b][valid], inputs["input_ids"][b][valid], positions[b][valid]
        slots = torch.nonzero(ids == image_token_id).squeeze(1)  # where visual tokens sit
        f, keep = select(s, feats[b]) if select else (feats[b], torch.arange(len(slots)))
        e = e.clone()
        e[slots[keep]] = f.to(e.dtype)
        alive = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
        alive[slots] = False
        alive[slots[keep]] = True
        rows_e.append(e[alive]), rows_p.append(pos[alive]), rows_m.append(torch.ones_like(pos[alive]))
        kept.append(len(keep))
    return left_pad(rows_e, 0.0), left_pad(rows_m, 0), left_pad(rows_p, 1), kept


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def evaluate(
    model,
    processor,
    samples: list[Sample],
    *,
    batch_size: int = 32,
    select: VisualSelect | None = None,
    image_fn: Callable[[Sample], object] | None = None,
    max_new_tokens: int = 4,
    progress: bool = False,
) -> EvalResult:
    """Answer every sample greedily and score it."""
    tok = processor.tokenizer
    tok.padding_side = "left"
    shape = DecoderShape.from_config(model.config.text_config)
    image_token_id = model.config.image_token_id
    predictions, n_visual, n_kept, n_text, flops = [], [], [], [], []
    batches = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", mininterval=2.0)
    start = time.perf_counter()
    for i in batches:
        chunk = samples[i : i + batch_size]
        inputs, embeds, feats = embed_batch(model, processor, chunk, image_fn)
        e, m, p, kept = _select_rows(embeds, inputs, feats, chunk, select, image_token_id)
        out = greedy_decode(model, e, m, p, max_new_tokens=max_new_tokens,
                            eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)  # fmt: skip
        predictions += tok.batch_decode(out, skip_special_tokens=True)
        for b, k in enumerate(kept):
            nv = int((inputs["input_ids"][b] == image_token_id).sum())
            nt = int(inputs["attention_mask"][b].sum()) - nv
            n_visual.append(nv), n_kept.append(k), n_text.append(nt)
            flops.append(prefill_flops(shape, [nt + k] * shape.layers))
    seconds = time.perf_counter() - start
    correct = [is_correct(s, p) for s, p in zip(samples, predictions)]
    return EvalResult(
        predictions=predictions,
        correct=correct,
        scores=accuracy([s.category for s in samples], correct),
        visual_tokens=_mean(n_visual),
        kept_visual_tokens=_mean(n_kept),
        text_tokens=_mean(n_text),
        llm_prefill_flops=_mean(flops),
        seconds=seconds,
    )
