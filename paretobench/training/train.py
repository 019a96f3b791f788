"""``paretobench train-embedded``: train an embedded model (``tiny-llava``, or ``tiny-qwen2.5-vl``
with ``--arch qwen2.5-vl``) from random init on synth8's train split.

Two stages (see ``../shared/notes/embedded-model-trials.md`` for why end-to-end training from
scratch fails on this scale: the image tokens collapse onto one mean vector):

1. **Vision tower alone, dense per-patch supervision.** Linear heads on the features LLaVA
   passes to the projector predict, for every 8x8 patch, what the generator drew there: item
   kind, colour, shape, character, bar value, and the patch's row and column. The tower learns
   local, position-aware features without any language.
2. **Frozen tower; projector + Llama decoder** trained on the VLMEvalKit MCQ prompt with the
   answer given as the option's text (a word) and end-of-sequence, loss on those tokens only.
   The families enter one at a time (see ``family_weights``), then train together.

Qwen2.5-VL (native resolution, ``synth8-native`` data): stage 1 supervises the vision model's
merged tokens (one per 16x16 pixels, in the decoder's space) with the labels of their patches;
stage 2 freezes the ViT blocks and trains the merger with the decoder. ``ImageData`` holds what
differs between the two architectures.

Deterministic given ``seed`` (data order, init, dropout-free model) on a fixed thread count.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from paretobench.data.tsv import file_fingerprint, read_tsv
from paretobench.models.loading import resolve_device
from paretobench.training.checkpoint import Checkpoint
from paretobench.training.config import TrainingConfig, uses_bf16
from paretobench.training.inputs import GemmaImages, LlavaImages, QwenImages, tokenize
from paretobench.training.stages import train_language, train_vision
from paretobench.training.weights import load_weights, transplant_decoder

ARCHS = ("llava", "qwen2.5-vl", "gemma3")


def train_embedded(cfg: TrainingConfig, *, log=print, resume: bool = False) -> dict:
    """Train an embedded model per ``cfg`` and save it (weights, processor, ``training.json``) to
    ``cfg.out``. ``resume``: continue from the state in ``cfg.checkpoint`` (see ``resume``)."""
    from tqdm.auto import tqdm

    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown architecture {cfg.arch!r}; valid: {', '.join(ARCHS)}")
    if cfg.vision_fixed_steps and (cfg.init_from or cfg.vision_from):
        raise ValueError("vision_fixed_steps shapes stage 1, which init_from and vision_from skip")
    if cfg.init_from and cfg.decoder_from:
        raise ValueError("init_from continues every weight of a run; decoder_from starts a new one (give one)")
    ckpt = Checkpoint(cfg.checkpoint, cfg.checkpoint_every)
    saved = ckpt.load()
    if saved is not None and not resume:
        raise ValueError(f"{cfg.checkpoint} holds a checkpoint of an earlier run (stage {saved['stage']}, step "
                         f"{saved['step']}); continue it with --resume {cfg.checkpoint}, or give another folder")  # fmt: skip
    if resume and saved is None:
        raise ValueError(f"{cfg.checkpoint or '(no --checkpoint)'} holds no checkpoint to resume from")
    if cfg.arch == "llava":
        from paretobench.models import tiny_llava as builder

        Data = LlavaImages
    elif cfg.arch == "gemma3":
        from paretobench.models import tiny_gemma3 as builder

        Data = GemmaImages
    else:
        from paretobench.models import tiny_qwen as builder

        Data = QwenImages
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.time()
    train_file = Path(cfg.data) / "synth8_train.tsv"
    train_sha = file_fingerprint([train_file])
    if saved is not None and saved["train_data_sha256"] != train_sha:
        raise ValueError(f"{train_file} is not the file the checkpoint in {cfg.checkpoint} was trained on "
                         f"(sha256 {train_sha[:12]}, checkpoint {saved['train_data_sha256'][:12]})")  # fmt: skip
    samples = read_tsv(train_file)
    if len(samples) <= cfg.val_size:
        raise ValueError(f"{train_file}: {len(samples)} rows, need more than val_size={cfg.val_size}")
    log(f"read {len(samples)} training rows from {train_file}")
    processor = builder.build_processor()
    model = builder.build_model(processor, seed=cfg.seed)
    data = Data(samples, processor)
    data.device = torch.device(resolve_device(cfg.device))
    if cfg.vision_fixed_steps:
        data.check_redraw(cfg.vision_fixed_size)
    model.to(data.device)
    ids, starts = tokenize(processor, samples, data.n_tokens)
    families = [s.category for s in samples]
    n = len(samples)
    train_rows, val_rows = np.arange(n - cfg.val_size), np.arange(n - cfg.val_size, n)
    pad_id = processor.tokenizer.pad_token_id

    skip_vision = bool(cfg.init_from or cfg.vision_from)
    bar = tqdm(total=(0 if skip_vision else cfg.vision_steps) + cfg.steps, desc="train-embedded", mininterval=2.0)
    t1 = time.time()
    prior, decoder = None, None
    if saved is not None and saved["stage"] == 2:  # stage 1 and the set-up of stage 2 are in the checkpoint
        vision, prior, decoder = saved["vision"], saved["prior"], saved["decoder"]
        t1 -= saved["vision_seconds"]
        if not skip_vision:
            bar.update(cfg.vision_steps)
        log(f"resuming stage 2 at step {saved['step']} from {cfg.checkpoint}")
    else:
        if cfg.init_from:
            prior = load_weights(model, Path(cfg.init_from))
            log(f"stage 1 skipped: continuing from {cfg.init_from}")
        elif cfg.vision_from:
            prior = load_weights(model, Path(cfg.vision_from), only=data.vision_prefix)
            log(f"stage 1 skipped: vision tower taken from {cfg.vision_from}")
        else:
            if saved is not None:
                t1 -= saved["vision_seconds"]
                log(f"resuming stage 1 at step {saved['step']} from {cfg.checkpoint}")
            vision = train_vision(model, data, train_rows, val_rows, cfg, rng, bar, log, ckpt, saved,
                                  extra=lambda: {"train_data_sha256": train_sha, "vision_seconds": time.time() - t1})  # fmt: skip
        if prior:  # the earlier run's stage 1 (and, with init_from, its stage 2) is part of this model
            vision = {"object_patches": prior["vision_patch_accuracy"], "shown": prior.get("vision_label_accuracy"),
                      "history": prior.get("vision_history", [])}
        if cfg.decoder_from:
            decoder = transplant_decoder(model, processor.tokenizer, Path(cfg.decoder_from))
            log(f"language model taken from {cfg.decoder_from} ({decoder['tokens_shared']} of "
                f"{decoder['tokens']} tokens shared)")  # fmt: skip
        saved = None
    out = Path(cfg.out)
    t2 = time.time()
    # stage 2's time before the checkpoint a resumed run starts from (its history counts it too)
    language_before = saved.get("language_seconds", 0.0) if saved is not None and saved["stage"] == 2 else 0.0

    def save(history, t_end=None):
        """Weights, processor and the run's record; also called at each validation (a checkpoint)."""
        t_end = t_end or time.time()
        out.mkdir(parents=True, exist_ok=True)
        builder.save(model, processor, out)
        record = {
            "config": asdict(cfg),
            "train_rows": len(train_rows),
            "held_out_rows": len(val_rows),
            "parameters": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(),
            "device": str(data.device),
            "bf16": uses_bf16(cfg, data.device),
            "minutes": {
                "data": round((t1 - t_start) / 60, 2) if not resume else None,
                "vision": round((t2 - t1) / 60, 2),
                "language": round((t_end - t2 + language_before) / 60, 2),
            },
            "train_data_sha256": train_sha,
            "vision_patch_accuracy": vision["object_patches"],
            "vision_label_accuracy": vision["shown"],  # None for towers trained before it was measured
            "vision_history": vision["history"],
            "history": history,
            "continued_from": prior,
            "decoder_from": decoder,
            "resumed": resume,
        }
        (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        return record

    extra = {"train_data_sha256": train_sha, "vision": vision, "prior": prior, "decoder": decoder,
             "vision_seconds": t2 - t1}  # fmt: skip
    history = train_language(model, data, ids, starts, families, train_rows, val_rows, cfg, rng, pad_id, bar, log,
                             checkpoint=save, ckpt=ckpt, saved=saved, extra=extra)  # fmt: skip
    bar.close()
    record = save(history)
    log(f"saved to {out}")
    return record


def resume(folder: str, *, log=print) -> dict:
    """Continue the run whose checkpoint is in ``folder`` (its settings are read from there)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} holds no training checkpoint (config.json is missing)")
    cfg = TrainingConfig(**json.loads(path.read_text()))
    cfg.checkpoint = str(folder)
    return train_embedded(cfg, log=log, resume=True)
