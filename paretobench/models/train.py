"""``paretobench train-embedded``: train ``tiny-llava`` from random init on synth8's train split.

Two stages (see ``../shared/notes/embedded-model-trials.md`` for why end-to-end training from
scratch fails on this scale: the image tokens collapse onto one mean vector):

1. **Vision tower alone, dense per-patch supervision.** Linear heads on the features LLaVA
   passes to the projector predict, for every 8x8 patch, what the generator drew there: item
   kind, colour, shape, character, bar value, and the patch's row and column. The tower learns
   local, position-aware features without any language.
2. **Frozen tower; projector + Llama decoder** trained on the VLMEvalKit MCQ prompt with the
   answer given as the option's text (a word) and end-of-sequence, loss on those tokens only.
   The families enter one at a time (see ``family_weights``), then train together.

Deterministic given ``seed`` (data order, init, dropout-free model) on a fixed thread count.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from paretobench.data import synth
from paretobench.data.tsv import Sample, file_fingerprint, read_tsv
from paretobench.adapters import chat_prompts
from paretobench.models.recipe import TrainConfig

# the order in which stage 2 introduces the families: single-object lookups first, then reading,
# then the families that combine several regions
ORDER = ("colour", "shape", "exist", "char", "word", "count", "chart", "relation")


# ----------------------------------------------------------------------------- data


def pixels(samples: list[Sample]) -> torch.Tensor:
    """(N, 3, 96, 96) float images normalised as the processor does ((x/255 - 0.5) / 0.5)."""
    arr = np.stack([np.asarray(s.image(), dtype=np.uint8) for s in samples])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8; normalised per batch


def normalise(u8: torch.Tensor) -> torch.Tensor:
    return (u8.float() / 255.0 - 0.5) / 0.5


def patch_labels(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Per-patch targets from each row's scene: (N, 144) long tensors, one per head."""
    colours, shapes, glyphs = list(synth.COLOURS), list(synth.SHAPES), synth.GLYPHS
    kinds = ("shape", "bar", "char")
    n, p = len(samples), synth.GRID * synth.GRID
    out = {k: torch.zeros(n, p, dtype=torch.long) for k in ("kind", "colour", "shape", "char", "value", "focus")}
    for i, s in enumerate(samples):
        scene = json.loads(s.extra["scene"])
        items, focus = scene["items"], set(scene["focus"])
        for j, owner in enumerate(scene["patches"]):
            if owner < 0:
                continue
            out["focus"][i, j] = int(owner in focus)
            it = items[owner]
            out["kind"][i, j] = 1 + kinds.index(it["kind"])
            out["colour"][i, j] = 1 + colours.index(it["colour"])
            if "shape" in it:
                out["shape"][i, j] = 1 + shapes.index(it["shape"])
            if "char" in it:
                out["char"][i, j] = 1 + glyphs.index(it["char"])
            if "value" in it:
                out["value"][i, j] = it["value"]
    pos = torch.arange(p)
    out["row"] = (pos // synth.GRID).expand(n, p)
    out["col"] = (pos % synth.GRID).expand(n, p)
    return out


HEAD_SIZES = {"kind": 4, "colour": 1 + len(synth.COLOURS), "shape": 1 + len(synth.SHAPES),
              "char": 1 + len(synth.GLYPHS), "value": 10, "row": synth.GRID, "col": synth.GRID}  # fmt: skip


def answer_text(s: Sample) -> str:
    return s.options[s.answer] if s.is_mcq else s.references[0]


def tokenize(processor, samples: list[Sample]) -> tuple[list[list[int]], list[int]]:
    """Token ids of prompt + answer + EOS per sample, and where the answer starts."""
    tok = processor.tokenizer
    n_img = synth.GRID * synth.GRID
    ids, starts = [], []
    for s, text in zip(samples, chat_prompts(processor, samples)):
        prompt = tok(text.replace(processor.image_token, processor.image_token * n_img)).input_ids
        answer = tok(answer_text(s), add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids.append(prompt + answer)
        starts.append(len(prompt))
    return ids, starts


def collate(ids, starts, rows, pad_id):
    """Right-padded batch with labels only on the answer tokens."""
    length = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        seq = torch.tensor(ids[r])
        input_ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
        labels[b, starts[r] : len(seq)] = seq[starts[r] :]
    return input_ids, mask, labels


# ----------------------------------------------------------------------------- stages


def _cosine(step, total, warmup, peak):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def vision_features(model, pix: torch.Tensor) -> torch.Tensor:
    """The per-patch features LLaVA hands to its projector, (B, 144, D)."""
    cfg = model.config
    out = model.model.vision_tower(pix, output_hidden_states=True)
    feats = out.hidden_states[cfg.vision_feature_layer]
    return feats[:, 1:] if cfg.vision_feature_select_strategy == "default" else feats


def train_vision(model, images, labels, train_rows, cfg: TrainConfig, rng, bar, log):
    tower = model.model.vision_tower
    dim = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(dim, v) for k, v in HEAD_SIZES.items()})
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=0.01)
    tower.train()
    for step in range(cfg.vision_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, cfg.vision_steps, cfg.warmup, cfg.vision_lr)
        rows = rng.choice(train_rows, cfg.vision_batch, replace=False)
        feats = vision_features(model, normalise(images[rows]))
        loss = sum(F.cross_entropy(heads[k](feats).flatten(0, 1), labels[k][rows].flatten()) for k in heads)
        # LLaVA's projector has no normalisation layer: keep the features it reads normalised per
        # token (what a LayerNorm in front of it would do), so no shared offset drowns the patches
        mean, var = feats.mean(-1), feats.var(-1, unbiased=False)
        loss = loss + cfg.vision_norm * (mean.pow(2).mean() + (var - 1).pow(2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(stage="vision", loss=f"{loss.item():.3f}")
    tower.eval()
    # held-out per-patch accuracy of each head, on object patches (background is easy)
    with torch.no_grad():
        rows = np.arange(len(images))[-cfg.val_size :]
        acc = {k: [] for k in heads}
        for i in range(0, len(rows), 128):
            r = rows[i : i + 128]
            feats = vision_features(model, normalise(images[r]))
            obj = labels["kind"][r] > 0
            for k in heads:
                pred = heads[k](feats).argmax(-1)
                acc[k].append((pred == labels[k][r])[obj].float())
    result = {k: round(torch.cat(v).mean().item(), 4) for k, v in acc.items()}
    log(f"stage 1 done: held-out per-patch accuracy on object patches {result}")
    return result


def answer_accuracy(model, ids, starts, rows, pad_id, images, families, batch=64):
    """Teacher-forced first answer token = what greedy decoding emits first; per family."""
    hits: dict[str, list[bool]] = {}
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            r = rows[i : i + batch]
            input_ids, mask, labels = collate(ids, starts, r, pad_id)
            logits = model(input_ids=input_ids, attention_mask=mask, pixel_values=normalise(images[r])).logits
            for b, row in enumerate(r):
                p = starts[row]
                hits.setdefault(families[row], []).append(bool(logits[b, p - 1].argmax() == input_ids[b, p]))
    per = {f: float(np.mean(v)) for f, v in sorted(hits.items())}
    per["mean"] = float(np.mean(list(per.values())))
    return per


def parse_emphasis(text: str) -> dict[str, float]:
    """``"relation=3,shape=2"`` -> ``{"relation": 3.0, "shape": 2.0}`` (families not named: 1)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"emphasis {part!r}: expected FAMILY=WEIGHT, e.g. relation=3") from None
        if not sep or out[name.strip()] <= 0:
            raise ValueError(f"emphasis {part!r}: expected FAMILY=WEIGHT with a positive weight")
    return out


def family_weights(fam: np.ndarray, step: int, introduce: int,
                   emphasis: dict[str, float] | None = None) -> tuple[np.ndarray, list[str]]:
    """Sampling weight of each training row (by its family ``fam``) at stage-2 ``step``, and the
    families trained on so far.

    Families enter one at a time, ``introduce`` steps apart, in ``ORDER`` (others after, by
    name): the newest family gets half of each batch, the ones before it share the other half.
    Once all have entered, every family gets an equal share, scaled by ``emphasis`` (family ->
    relative weight). ``introduce=0``: those shares from the start. Measured on the embedded model: trained alone, a family leaves the loss plateau in
    a few hundred steps; mixed with the seven others from the start, it stays near chance for
    thousands of steps.
    """
    present = set(fam.tolist())
    order = [f for f in ORDER if f in present] + sorted(present - set(ORDER))
    k = step // introduce if introduce else len(order)
    if k >= len(order):
        emphasis = emphasis or {}
        unknown = set(emphasis) - present
        if unknown:
            raise ValueError(f"emphasis names families not in the training data: {sorted(unknown)}")
        share = {f: emphasis.get(f, 1.0) for f in order}
    else:
        new, old = order[k], order[:k]
        share = {new: 0.5 if old else 1.0, **{f: 0.5 / len(old) for f in old}}
    counts = {f: int((fam == f).sum()) for f in share}
    return np.array([share[f] / counts[f] if f in share else 0.0 for f in fam]), list(share)


def train_language(model, images, ids, starts, families, train_rows, val_rows, cfg, rng, pad_id, bar, log,
                   checkpoint=None, patches=None):
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    focus = patches["focus"] if patches else None
    # patch supervision: linear heads on the projector's output (the decoder's image tokens) read
    # the stage-1 labels of every patch, so the projector keeps what the tower knows; measured on
    # the embedded model without it, row and column fell from 100% linearly readable in the
    # tower's features to 33% and 42% after the projector (see docs/notes)
    dim = model.config.text_config.hidden_size
    readout = torch.nn.ModuleDict({k: torch.nn.Linear(dim, v) for k, v in HEAD_SIZES.items()})
    # grounding: a probe on the image tokens' hidden states at one decoder layer predicts which
    # patches show the items the question is about (the generator's ground truth); the probe is
    # thrown away after training, the decoder keeps what it learned
    probe = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    params = [p for p in model.parameters() if p.requires_grad] + list(probe.parameters())
    params += list(readout.parameters()) if cfg.patch_labels else []
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    fam = np.array([families[r] for r in train_rows])
    emphasis = parse_emphasis(cfg.emphasis)
    history = []
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, cfg.steps, cfg.warmup, cfg.lr)
        w, active = family_weights(fam, step, cfg.introduce, emphasis)
        rows = rng.choice(train_rows, cfg.batch, replace=False, p=w / w.sum())
        input_ids, mask, labels = collate(ids, starts, rows, pad_id)
        model.train()
        grounding = bool(cfg.grounding) and focus is not None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = model(input_ids=input_ids, attention_mask=mask, pixel_values=normalise(images[rows]), labels=labels,
                        output_hidden_states=grounding)  # fmt: skip
            if grounding:
                h = out.hidden_states[cfg.grounding_layer][input_ids == model.config.image_token_id]
                target = focus[rows].flatten().float()
                aux = F.binary_cross_entropy_with_logits(probe(h).squeeze(-1).float(), target,
                                                         pos_weight=torch.tensor(4.0))  # fmt: skip
            loss = out.loss
            if grounding:
                loss = loss + cfg.grounding * aux
            if cfg.patch_labels and patches is not None:
                x = out.image_hidden_states.view(len(rows), -1, dim)
                read = sum(F.cross_entropy(readout[k](x).flatten(0, 1).float(), patches[k][rows].flatten())
                           for k in readout)  # fmt: skip
                loss = loss + cfg.patch_labels * read
        if cfg.shared_penalty:
            # the projector drifts towards one vector shared by all image tokens, which drowns what
            # each patch shows (the "collapse" of the embedded-model trials): penalise that share
            x = out.image_hidden_states.float().view(len(rows), -1, out.image_hidden_states.shape[-1])
            shared = x.mean(1).pow(2).sum(-1) / x.pow(2).sum(-1).mean(1)
            loss = loss + cfg.shared_penalty * shared.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(stage="language", loss=f"{out.loss.item():.3f}", families=len(active))
        if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
            model.eval()
            acc = answer_accuracy(model, ids, starts, val_rows, pad_id, images, families)
            history.append({"step": step + 1, "minutes": round((time.time() - t0) / 60, 2), **acc})
            log(f"step {step + 1}: held-out answer accuracy " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()))
            if checkpoint:
                checkpoint(history)
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(True)
    model.eval()
    return history


def load_weights(model, folder: Path, *, everything: bool) -> dict:
    """Copy a saved model's weights (all, or only its vision tower) into ``model``; returns that
    run's training record."""
    from transformers import AutoModelForImageTextToText

    saved = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    if everything:
        model.load_state_dict(saved.state_dict())
    else:
        model.model.vision_tower.load_state_dict(saved.model.vision_tower.state_dict())
    return json.loads((folder / "training.json").read_text())


def train_embedded(cfg: TrainConfig, *, log=print) -> dict:
    """Train tiny-llava per ``cfg`` and save it (weights, processor, ``training.json``) to ``cfg.out``."""
    from tqdm.auto import tqdm

    from paretobench.models.tiny_llava import build_model, build_processor

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.time()
    train_file = Path(cfg.data) / "synth8_train.tsv"
    samples = read_tsv(train_file)
    if len(samples) <= cfg.val_size:
        raise ValueError(f"{train_file}: {len(samples)} rows, need more than val_size={cfg.val_size}")
    log(f"read {len(samples)} training rows from {train_file}")
    processor = build_processor()
    model = build_model(processor, seed=cfg.seed)
    images = pixels(samples)
    labels = patch_labels(samples)
    ids, starts = tokenize(processor, samples)
    families = [s.category for s in samples]
    n = len(samples)
    train_rows, val_rows = np.arange(n - cfg.val_size), np.arange(n - cfg.val_size, n)
    pad_id = processor.tokenizer.pad_token_id

    skip_vision = bool(cfg.init_from or cfg.vision_from)
    bar = tqdm(total=(0 if skip_vision else cfg.vision_steps) + cfg.steps, desc="train-embedded", mininterval=2.0)
    t1 = time.time()
    if cfg.init_from:
        prior = load_weights(model, Path(cfg.init_from), everything=True)
        log(f"stage 1 skipped: continuing from {cfg.init_from}")
    elif cfg.vision_from:
        prior = load_weights(model, Path(cfg.vision_from), everything=False)
        log(f"stage 1 skipped: vision tower taken from {cfg.vision_from}")
    else:
        prior = None
        vision = train_vision(model, images, labels, train_rows, cfg, rng, bar, log)
    if prior:  # the earlier run's stage 1 (and, with init_from, its stage 2) is part of this model
        vision = prior["vision_patch_accuracy"]
    out = Path(cfg.out)
    train_sha = file_fingerprint([train_file])

    def save(history, t_end=None):
        """Weights, processor and the run's record; also called at each validation (a checkpoint)."""
        t_end = t_end or time.time()
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        record = {
            "config": asdict(cfg),
            "train_rows": len(train_rows),
            "held_out_rows": len(val_rows),
            "parameters": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(),
            "minutes": {
                "data": round((t1 - t_start) / 60, 2),
                "vision": round((t2 - t1) / 60, 2),
                "language": round((t_end - t2) / 60, 2),
            },
            "train_data_sha256": train_sha,
            "vision_patch_accuracy": vision,
            "history": history,
            "continued_from": prior,
        }
        (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        return record

    t2 = time.time()
    history = train_language(model, images, ids, starts, families, train_rows, val_rows, cfg, rng, pad_id, bar, log,
                             checkpoint=save, patches=labels)  # fmt: skip
    bar.close()
    record = save(history)
    log(f"saved to {out}")
    return record
