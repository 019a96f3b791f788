"""The two training stages: the vision tower alone on per-token labels, then the projector (or
merger) and the decoder on the answers."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from paretobench.training.checkpoint import Checkpoint, _restore, _snapshot
from paretobench.training.config import TrainingConfig, uses_bf16
from paretobench.training.inputs import ImageData, collate
from paretobench.training.labels import label_accuracy, label_loss

ROLE_FAMILIES = ("relation",)
# the order in which stage 2 introduces the families: single-object lookups first, then reading,
# then the families that combine several regions
ORDER = ("colour", "shape", "exist", "char", "word", "count", "chart", "relation")


def _cosine(step, total, warmup, peak):
    """Linear warm-up, then cosine to 0: the rate at ``step``. Torch's SequentialLR(LinearLR,
    CosineAnnealingLR) gives the same rates (within 3e-15 relative, measured over 6,000 steps) but
    keeps state; this closed form lets a resumed run set the rate from the step alone, so a
    checkpoint needs no scheduler state and checkpoints written before stay resumable bit for bit."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_vision(model, data: ImageData, train_rows, val_rows, cfg: TrainingConfig, rng, bar, log,
                 ckpt: Checkpoint | None = None, saved: dict | None = None, extra=dict):  # fmt: skip
    """Stage 1. ``saved``: a stage-1 checkpoint to continue from; ``ckpt`` writes new ones, with
    what ``extra()`` gives (what the caller needs to resume)."""
    modules = data.stage1_modules(model)
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(data.feature_dim(model), v) for k, v in data.head_sizes().items()})
    heads.to(data.device)
    params = [p for m in modules for p in m.parameters()] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, betas=(0.9, 0.98), weight_decay=0.01)
    history = []  # held-out accuracy on the patches showing each label, every ``val_every`` steps
    start = 0
    if saved is not None:
        _restore(saved, model, {"heads": heads}, opt, rng)
        start, history = saved["step"], saved["history"]
        bar.update(start)
    for m in modules:
        m.train()
    for step in range(start, cfg.vision_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, cfg.vision_steps, cfg.warmup, cfg.vision_lr)
        rows = rng.choice(train_rows, cfg.vision_batch, replace=False)
        data.redraw_size = cfg.vision_fixed_size if step < cfg.vision_fixed_steps else None
        feats = data.stage1_features(model, data.vision_inputs(rows))
        targets = data.targets(rows)
        data.redraw_size = None  # validation, and stage 2, see the images as they are
        loss = label_loss(heads, feats, targets, cfg.shown_only)
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
        if (step + 1) % cfg.val_every == 0 and step + 1 < cfg.vision_steps:
            _, where = held_out_labels(model, data, heads, val_rows)
            history.append({"step": step + 1, **where})
            log(f"step {step + 1} (stage 1): held-out accuracy on the patches showing each label {where}")
        if ckpt is not None and ckpt.due(step + 1) and step + 1 < cfg.vision_steps:
            ckpt.save(cfg, _snapshot(1, step + 1, model, {"heads": heads}, opt, rng, {"history": history, **extra()}))
    for m in modules:
        m.eval()
    result, where = held_out_labels(model, data, heads, val_rows)
    history.append({"step": cfg.vision_steps, **where})
    log(f"stage 1 done: held-out per-patch accuracy on object patches {result}; on the patches showing each label {where}")
    return {"object_patches": result, "shown": where, "history": history}


def held_out_labels(model, data: ImageData, heads, val_rows) -> tuple[dict, dict]:
    """Held-out accuracy of each stage-1 head: on all object patches (background is easy), and on
    the patches that show its label (see ``label_accuracy``: on object patches a character head is
    right wherever no character is drawn, which hid a tower that could not read)."""
    modes = [(m, m.training) for m in data.stage1_modules(model)]
    for m, _ in modes:
        m.eval()
    with torch.no_grad():
        acc, tally = {k: [] for k in heads}, {k: [0, 0] for k in heads}
        for i in range(0, len(val_rows), 128):
            r = val_rows[i : i + 128]
            feats = data.stage1_features(model, data.vision_inputs(r))
            targets = data.targets(r)
            obj = targets["kind"] > 0
            for k in heads:
                acc[k].append((heads[k](feats).argmax(-1) == targets[k])[obj].float())
            for k, (hits, n) in label_accuracy(heads, feats, targets).items():
                tally[k][0] += hits
                tally[k][1] += n
    for m, training in modes:
        m.train(training)
    result = {k: round(torch.cat(v).mean().item(), 4) for k, v in acc.items()}
    return result, {k: round(h / max(n, 1), 4) for k, (h, n) in tally.items()}


def answer_accuracy(model, data: ImageData, ids, starts, rows, pad_id, families, batch=64):
    """Teacher-forced first answer token = what greedy decoding emits first; per family."""
    hits: dict[str, list[bool]] = {}
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            r = rows[i : i + batch]
            input_ids, mask, _ = collate(ids, starts, r, pad_id, data.device)
            logits = model(**data.model_inputs(model, input_ids, mask, r)).logits
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


def train_language(model, data: ImageData, ids, starts, families, train_rows, val_rows, cfg, rng, pad_id, bar, log,
                   checkpoint=None, ckpt: Checkpoint | None = None, saved: dict | None = None,
                   extra: dict | None = None):  # fmt: skip
    """Stage 2. ``checkpoint(history)`` saves the model at each validation; ``ckpt`` writes the
    whole state every few steps (with ``extra``, what the caller needs to resume), and ``saved``
    is such a state to continue from."""
    frozen = [p for m in data.frozen_in_stage2(model) for p in m.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    # patch supervision: linear heads on the projector's output (the decoder's image tokens) read
    # the stage-1 labels of every patch, so the projector keeps what the tower knows; measured on
    # the embedded model without it, row and column fell from 100% linearly readable in the
    # tower's features to 33% and 42% after the projector (see docs/notes)
    dim = model.config.text_config.hidden_size
    readout = torch.nn.ModuleDict({k: torch.nn.Linear(dim, v) for k, v in data.head_sizes().items()})
    # grounding: a probe on the image tokens' hidden states at one decoder layer predicts which
    # patches show the items the question is about (the generator's ground truth); the probe is
    # thrown away after training, the decoder keeps what it learned
    probe = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    # pointing: at the position that predicts the answer, a probe on one decoder layer's output
    # reads where the question's one or two items are (row and column of each), so the decoder
    # learns to fetch the named objects' places before it compares them (``relation``)
    pointer = torch.nn.Linear(dim, 4 * data.grid)
    # roles: on a relation question's image tokens, a probe on one decoder layer's output reads
    # whether the token shows the first named item, the second or neither; measured on the
    # embedded model without it, those tokens knew they were asked about but not which of the
    # two (so the answer got the axis right and the direction at chance; see docs/notes)
    roler = torch.nn.Linear(dim, 3)
    dev = data.device
    for m in (readout, probe, pointer, roler):
        m.to(dev)
    params = [p for p in model.parameters() if p.requires_grad] + list(probe.parameters())
    params += list(roler.parameters()) if cfg.roles else []
    params += list(readout.parameters()) if cfg.patch_labels else []
    params += list(pointer.parameters()) if cfg.pointing else []
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    fam = np.array([families[r] for r in train_rows])
    emphasis = parse_emphasis(cfg.emphasis)
    captured = {}
    hook = data.image_states_module(model).register_forward_hook(
        lambda module, args, output: captured.__setitem__("states", data.image_states(output)))
    history = []
    t0 = time.time()
    modules = {"readout": readout, "probe": probe, "pointer": pointer, "roler": roler}
    start = 0
    if saved is not None and saved["stage"] == 2:
        _restore(saved, model, modules, opt, rng)
        start, history = saved["step"], saved["history"]
        t0 -= saved.get("language_seconds", 0.0)
        bar.update(start)
    def snapshot(step):
        return _snapshot(2, step, model, modules, opt, rng, {
            "history": history, "language_seconds": time.time() - t0, **(extra or {})})  # fmt: skip

    if ckpt is not None and start == 0:  # stage 1 done: a resumed run starts here, not in stage 1
        ckpt.save(cfg, snapshot(0))
    bf16 = uses_bf16(cfg, dev)
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, cfg.steps, cfg.warmup, cfg.lr)
        w, active = family_weights(fam, step, cfg.introduce, emphasis)
        rows = rng.choice(train_rows, cfg.batch, replace=False, p=w / w.sum())
        input_ids, mask, labels = collate(ids, starts, rows, pad_id, dev)
        targets = data.targets(rows)
        model.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(**data.model_inputs(model, input_ids, mask, rows), labels=labels,
                        output_hidden_states=bool(cfg.grounding or cfg.pointing or cfg.roles))  # fmt: skip
            states = captured.pop("states")  # (image tokens of the batch, dim), in sequence order
            loss = out.loss
            if cfg.grounding:
                h = out.hidden_states[cfg.grounding_layer][input_ids == model.config.image_token_id]
                aux = F.binary_cross_entropy_with_logits(probe(h).squeeze(-1).float(), targets["focus"].float(),
                                                         pos_weight=torch.tensor(4.0, device=dev))  # fmt: skip
                loss = loss + cfg.grounding * aux
            if cfg.roles:
                h = out.hidden_states[cfg.roles_layer][input_ids == model.config.image_token_id]
                ordered = torch.tensor([families[r] in ROLE_FAMILIES for r in rows], device=dev)
                per_token = ordered.repeat_interleave(torch.tensor([data.n_tokens(r) for r in rows], device=dev))
                want = targets["role"].masked_fill(~per_token, -100)
                if bool((want >= 0).any()):
                    loss = loss + cfg.roles * F.cross_entropy(roler(h).float(), want, ignore_index=-100)
            if cfg.patch_labels:
                loss = loss + cfg.patch_labels * label_loss(readout, states, targets, cfg.shown_only)
            if cfg.pointing:
                at = torch.tensor([starts[r] - 1 for r in rows], device=dev)
                h = out.hidden_states[cfg.pointing_layer][torch.arange(len(rows), device=dev), at]
                logits = pointer(h).float().view(len(rows), 4, data.grid)
                want = data.positions[rows].to(dev)
                if bool((want >= 0).any()):
                    loss = loss + cfg.pointing * F.cross_entropy(logits.flatten(0, 1), want.flatten(), ignore_index=-100)
        if cfg.shared_penalty:
            # the projector drifts towards one vector shared by all image tokens, which drowns what
            # each patch shows (the "collapse" of the embedded-model trials): penalise that share
            per_image = states.float().split([data.n_tokens(r) for r in rows])
            shared = torch.stack([x.mean(0).pow(2).sum() / x.pow(2).sum(-1).mean() for x in per_image])
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
            acc = answer_accuracy(model, data, ids, starts, val_rows, pad_id, families)
            history.append({"step": step + 1, "minutes": round((time.time() - t0) / 60, 2), **acc})
            log(f"step {step + 1}: held-out answer accuracy " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()))
            if checkpoint:
                checkpoint(history)
        if ckpt is not None and ckpt.due(step + 1) and step + 1 < cfg.steps:
            ckpt.save(cfg, snapshot(step + 1))
    hook.remove()
    for p in frozen:
        p.requires_grad_(True)
    model.eval()
    return history
