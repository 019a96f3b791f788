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
from paretobench.models.loading import resolve_device
from paretobench.models.recipe import TrainConfig

# families whose questions name two items in an order that matters ("where is X relative to Y")
ROLE_FAMILIES = ("relation",)
# the order in which stage 2 introduces the families: single-object lookups first, then reading,
# then the families that combine several regions
ORDER = ("colour", "shape", "exist", "char", "word", "count", "chart", "relation")


# ----------------------------------------------------------------------------- checkpoints


class Checkpoint:
    """The whole training state in one folder (``state.pt`` and the run's ``config.json``),
    written every ``every`` steps of either stage, so that an interrupted run resumes exactly
    where it stopped: weights, the stage's heads and probes, the optimiser, both random
    generators, the history and the time spent so far. Written to a temporary file first, then
    renamed, so a kill while saving leaves the previous checkpoint whole."""

    NAME = "state.pt"

    def __init__(self, folder: str, every: int):
        self.folder = Path(folder) if folder else None
        self.every = every
        if self.folder is not None and every < 1:
            raise ValueError(f"checkpoint_every {every} must be at least 1")

    def due(self, step: int) -> bool:
        return self.folder is not None and step % self.every == 0

    def load(self) -> dict | None:
        if self.folder is None or not (self.folder / self.NAME).is_file():
            return None
        return torch.load(self.folder / self.NAME, map_location="cpu", weights_only=False)

    def save(self, cfg: TrainConfig, state: dict) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        tmp = self.folder / (self.NAME + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.folder / self.NAME)


def _cpu(state_dict: dict) -> dict:
    return {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in state_dict.items()}


def _optimiser_state(opt) -> dict:
    sd = opt.state_dict()
    return {"state": {k: _cpu(v) for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def _snapshot(stage: int, step: int, model, modules: dict, opt, rng, extra: dict) -> dict:
    """What ``Checkpoint.save`` keeps at ``step`` of ``stage`` (1 or 2)."""
    return {"stage": stage, "step": step, "model": _cpu(model.state_dict()),
            "modules": {k: _cpu(m.state_dict()) for k, m in modules.items()},
            "optimiser": None if opt is None else _optimiser_state(opt),
            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **extra}  # fmt: skip


def _restore(saved: dict, model, modules: dict, opt, rng) -> None:
    model.load_state_dict(saved["model"])
    for k, m in modules.items():
        m.load_state_dict(saved["modules"][k])
    if opt is not None:
        opt.load_state_dict(saved["optimiser"])
    rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])


# ----------------------------------------------------------------------------- data


def pixels(samples: list[Sample]) -> torch.Tensor:
    """(N, 3, 96, 96) float images normalised as the processor does ((x/255 - 0.5) / 0.5)."""
    arr = np.stack([np.asarray(s.image(), dtype=np.uint8) for s in samples])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8; normalised per batch


def normalise(u8: torch.Tensor) -> torch.Tensor:
    return (u8.float() / 255.0 - 0.5) / 0.5


def scene_labels(scene: dict) -> dict[str, torch.Tensor]:
    """(patches,) long targets per label from one row's scene: what is drawn in each patch
    (kind, colour, shape, character, bar value; 0 = nothing), whether it is asked about, which
    of two named items it shows (``role``: 1 the first, 2 the second, 0 neither; -100, ignored,
    unless the question is about exactly two items), and the patch's row and column."""
    colours, shapes, glyphs = list(synth.COLOURS), list(synth.SHAPES), synth.GLYPHS
    kinds = ("shape", "bar", "char")
    items, focus = scene["items"], set(scene["focus"])
    rows, cols = scene.get("grid", (synth.GRID, synth.GRID))
    p = rows * cols
    out = {k: torch.zeros(p, dtype=torch.long) for k in ("kind", "colour", "shape", "char", "value", "focus")}
    named = scene["focus"] if len(scene["focus"]) == 2 else None  # the two items, in question order
    out["role"] = torch.full((p,), -100 if named is None else 0, dtype=torch.long)
    for j, owner in enumerate(scene["patches"]):
        if owner < 0:
            continue
        out["focus"][j] = int(owner in focus)
        if named is not None and owner in named:
            out["role"][j] = 1 + named.index(owner)
        it = items[owner]
        out["kind"][j] = 1 + kinds.index(it["kind"])
        out["colour"][j] = 1 + colours.index(it["colour"])
        if "shape" in it:
            out["shape"][j] = 1 + shapes.index(it["shape"])
        if "char" in it:
            out["char"][j] = 1 + glyphs.index(it["char"])
        if "value" in it:
            out["value"][j] = it["value"]
    pos = torch.arange(p)
    out["row"], out["col"] = pos // cols, pos % cols
    return out


def item_positions(scene: dict) -> list[int]:
    """Where the question's first two items are, for the answer-position probe: [row, col] of the
    first item's patches' centre, then of the second's (-100, ignored, where an item shows in no
    patch or the question is not about exactly one or two items)."""
    rows, cols = scene.get("grid", (synth.GRID, synth.GRID))
    out = [-100] * 4
    if len(scene["focus"]) > 2:
        return out
    owners = np.array(scene["patches"]).reshape(rows, cols)
    for k, item in enumerate(scene["focus"]):
        r, c = np.nonzero(owners == item)
        if len(r):
            out[2 * k : 2 * k + 2] = [int(round(r.mean())), int(round(c.mean()))]
    return out


def patch_labels(samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Per-patch targets of 96x96 rows: (N, 144) long tensors, one per label."""
    per = [scene_labels(json.loads(s.extra["scene"])) for s in samples]
    return {k: torch.stack([lab[k] for lab in per]) for k in per[0]}


# the labels that describe an item (0: the token shows no item with that attribute), against the
# labels every token has (kind: 0 is background; row and column)
ATTRIBUTES = ("colour", "shape", "char", "value")

HEAD_SIZES = {"kind": 4, "colour": 1 + len(synth.COLOURS), "shape": 1 + len(synth.SHAPES),
              "char": 1 + len(synth.GLYPHS), "value": 10, "row": synth.GRID, "col": synth.GRID}  # fmt: skip


class ImageData:
    """How one architecture's images, and the labels of what each visual token shows, reach the
    model in both stages. ``rows`` index the training samples."""

    grid: int  # the largest patch grid side (row and column label classes)
    positions: torch.Tensor  # (samples, 4): the question's items' rows and columns (see item_positions)
    vision_prefix: str  # the names of the weights stage 1 trains
    device = torch.device("cpu")  # where ``vision_inputs`` and ``targets`` put a batch (the model's)
    redraw_size: int | None = None  # set: the batch's scenes are redrawn at this many pixels a side

    def check_redraw(self, size: int) -> None:
        """Refuse a ``redraw_size`` this architecture cannot take."""
        raise ValueError("this architecture's images have one size already; redrawing them is for "
                         "native-resolution models (--arch qwen2.5-vl)")

    def n_tokens(self, row: int) -> int:
        raise NotImplementedError

    def vision_inputs(self, rows) -> dict:
        """The model's image keyword arguments for ``rows``."""
        raise NotImplementedError

    def model_inputs(self, model, input_ids, mask, rows) -> dict:
        """Every keyword argument of the model's forward but the labels."""
        return {"input_ids": input_ids, "attention_mask": mask, **self.vision_inputs(rows)}

    def stage1_features(self, model, inputs: dict) -> torch.Tensor:
        """(tokens of all rows, D): the features stage 1's heads read, in ``targets`` order."""
        raise NotImplementedError

    def targets(self, rows) -> dict[str, torch.Tensor]:
        """Per label, (tokens of all rows,) long targets."""
        raise NotImplementedError

    def stage1_modules(self, model) -> list[torch.nn.Module]:
        raise NotImplementedError

    def frozen_in_stage2(self, model) -> list[torch.nn.Module]:
        raise NotImplementedError

    def image_states_module(self, model) -> torch.nn.Module:
        """The module whose output holds the image tokens in the decoder's space."""
        raise NotImplementedError

    def image_states(self, output) -> torch.Tensor:
        """(tokens of all rows, D) from that module's output."""
        return output

    def feature_dim(self, model) -> int:
        raise NotImplementedError

    def head_sizes(self) -> dict[str, int]:
        return {**HEAD_SIZES, "row": self.grid, "col": self.grid}


class LlavaImages(ImageData):
    """Fixed 96x96 images, decoded once into one uint8 tensor; 144 patches, labelled per 8x8."""

    grid = synth.GRID
    vision_prefix = "model.vision_tower."

    def __init__(self, samples: list[Sample], processor=None):
        self.images = pixels(samples)
        self.labels = patch_labels(samples)
        self.positions = torch.tensor([item_positions(json.loads(s.extra["scene"])) for s in samples])

    def n_tokens(self, row):
        return synth.GRID * synth.GRID

    def vision_inputs(self, rows):
        return {"pixel_values": normalise(self.images[rows]).to(self.device)}

    def stage1_features(self, model, inputs):
        return vision_features(model, inputs["pixel_values"]).flatten(0, 1)

    def feature_dim(self, model):
        return model.config.vision_config.hidden_size

    def targets(self, rows):
        return {k: v[rows].flatten().to(self.device) for k, v in self.labels.items()}

    def stage1_modules(self, model):
        return [model.model.vision_tower]

    def frozen_in_stage2(self, model):
        return [model.model.vision_tower]

    def image_states_module(self, model):
        return model.model.multi_modal_projector

    def image_states(self, output):
        return output.flatten(0, -2)


class GemmaImages(LlavaImages):
    """Gemma 3: fixed 96x96 images like LLaVA's, one visual token per 8x8 patch (the projector's
    pooling kernel is 1), a SigLIP tower with no class token; the image tokens attend to each other
    both ways, which the model builds from ``token_type_ids``."""

    def stage1_features(self, model, inputs):
        return model.model.vision_tower(pixel_values=inputs["pixel_values"]).last_hidden_state.flatten(0, 1)

    def model_inputs(self, model, input_ids, mask, rows):
        types = (input_ids == model.config.image_token_id).long()
        return {**super().model_inputs(model, input_ids, mask, rows), "token_type_ids": types}


class QwenImages(ImageData):
    """Native-resolution images (``synth8-native``): each through the image processor per batch;
    labels per merged token (one per ``scene["cell"]`` pixels), row-major as the decoder sees them."""

    vision_prefix = "model.visual."

    def __init__(self, samples: list[Sample], processor):
        self.samples, self.image_processor = samples, processor.image_processor
        # one merged token per ``cell`` x ``cell`` pixels
        self.cell = self.image_processor.patch_size * self.image_processor.merge_size
        self.labels, self.counts, self.positions = [], [], []
        for s in samples:
            scene = json.loads(s.extra["scene"])
            if scene.get("cell") != self.cell:
                raise ValueError(f"sample {s.index}: patch labels per {scene.get('cell')} pixels; this model merges "
                                 f"{self.cell}-pixel tokens (use synth8-native data)")  # fmt: skip
            self.labels.append(scene_labels(scene))
            self.positions.append(item_positions(scene))
            self.counts.append(len(scene["patches"]))
        self.grid = max(max(int(lab["row"].max()), int(lab["col"].max())) for lab in self.labels) + 1
        self.positions = torch.tensor(self.positions)
        self._redrawn = (None, None)  # the last redrawn batch: (size, rows), (images, labels)

    def check_redraw(self, size):
        ip, cell = self.image_processor, self.cell
        lo, hi = ip.size.shortest_edge, ip.size.longest_edge  # the processor's pixel bounds (min/max_pixels)
        if size % cell or not lo <= size * size <= hi or size > self.grid * cell:
            raise ValueError(f"cannot redraw the scenes at {size}x{size} pixels: the size must be a multiple of "
                             f"{cell} with {lo} to {hi} pixels in all, at most "
                             f"{self.grid * cell} a side (the largest training image's grid)")  # fmt: skip

    def n_tokens(self, row):
        return self.counts[row]

    def _batch(self, rows) -> tuple[list, list[dict[str, torch.Tensor]]]:
        """The rows' images and per-token labels: as stored, or each scene redrawn at ``redraw_size``."""
        if self.redraw_size is None:
            return [self.samples[r].image() for r in rows], [self.labels[r] for r in rows]
        key = (self.redraw_size, tuple(int(r) for r in rows))
        if self._redrawn[0] != key:
            images, labels = [], []
            for r in rows:
                scene = json.loads(self.samples[r].extra["scene"])
                image, owners = synth.redraw(scene, (self.redraw_size, self.redraw_size), self.cell)
                images.append(image)
                labels.append(scene_labels({**scene, "patches": owners.reshape(-1).tolist(), "grid": owners.shape}))
            self._redrawn = (key, (images, labels))
        return self._redrawn[1]

    def vision_inputs(self, rows):
        out = self.image_processor(images=self._batch(rows)[0], return_tensors="pt")
        return {k: out[k].to(self.device) for k in ("pixel_values", "image_grid_thw")}

    def model_inputs(self, model, input_ids, mask, rows):
        # without the token types Qwen's get_rope_index would give the image 1-D positions
        types = (input_ids == model.config.image_token_id).int()
        return {**super().model_inputs(model, input_ids, mask, rows), "mm_token_type_ids": types}

    def stage1_features(self, model, inputs):
        return model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output

    def feature_dim(self, model):
        return model.config.vision_config.out_hidden_size

    def targets(self, rows):
        labels = self._batch(rows)[1]
        return {k: torch.cat([lab[k] for lab in labels]).to(self.device) for k in labels[0]}

    def stage1_modules(self, model):
        return [model.model.visual]

    def frozen_in_stage2(self, model):
        visual = model.model.visual
        return [visual.patch_embed, visual.blocks]

    def image_states_module(self, model):
        return model.model.visual

    def image_states(self, output):
        return output.pooler_output


def answer_text(s: Sample) -> str:
    return s.options[s.answer] if s.is_mcq else s.references[0]


def tokenize(processor, samples: list[Sample], n_tokens=None) -> tuple[list[list[int]], list[int]]:
    """Token ids of prompt + answer + EOS per sample, and where the answer starts.
    ``n_tokens(i)``: sample i's visual token count (default: 144, one per 8x8 patch of 96x96)."""
    tok = processor.tokenizer
    ids, starts = [], []
    for i, (s, text) in enumerate(zip(samples, chat_prompts(processor, samples))):
        n_img = n_tokens(i) if n_tokens else synth.GRID * synth.GRID
        if hasattr(processor, "full_image_sequence"):  # Gemma 3: the image's start token opens a fixed block
            text = text.replace(processor.boi_token, processor.full_image_sequence)
        else:
            text = text.replace(processor.image_token, processor.image_token * n_img)
        prompt = tok(text).input_ids
        answer = tok(answer_text(s), add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids.append(prompt + answer)
        starts.append(len(prompt))
    return ids, starts


def collate(ids, starts, rows, pad_id, device=None):
    """Right-padded batch with labels only on the answer tokens (on ``device``, default the CPU)."""
    length = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        seq = torch.tensor(ids[r])
        input_ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
        labels[b, starts[r] : len(seq)] = seq[starts[r] :]
    return input_ids.to(device), mask.to(device), labels.to(device)


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


def shown(targets: dict[str, torch.Tensor], label: str) -> torch.Tensor:
    """The tokens that show ``label``: an attribute's own (label > 0), every object token for kind,
    row and column."""
    return targets[label] > 0 if label in ATTRIBUTES else targets["kind"] > 0


def label_loss(heads, feats: torch.Tensor, targets: dict[str, torch.Tensor], shown_only: bool) -> torch.Tensor:
    """Summed cross-entropy of each head's per-token label; with ``shown_only``, an attribute
    head's mean runs over the tokens that show that attribute (see ``TrainConfig.shown_only``)."""
    total = feats.new_zeros(())
    for k, head in heads.items():
        x, y = feats, targets[k]
        if shown_only and k in ATTRIBUTES:
            x, y = x[y > 0], y[y > 0]
            if not len(y):
                continue
        total = total + F.cross_entropy(head(x).float(), y)
    return total


def label_accuracy(heads, feats: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """Per label, (hits, tokens) over the tokens that show it (``shown``)."""
    out = {}
    for k, head in heads.items():
        on = shown(targets, k)
        out[k] = (int((head(feats[on]).argmax(-1) == targets[k][on]).sum()), int(on.sum()))
    return out


def train_vision(model, data: ImageData, train_rows, val_rows, cfg: TrainConfig, rng, bar, log,
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
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, cfg.steps, cfg.warmup, cfg.lr)
        w, active = family_weights(fam, step, cfg.introduce, emphasis)
        rows = rng.choice(train_rows, cfg.batch, replace=False, p=w / w.sum())
        input_ids, mask, labels = collate(ids, starts, rows, pad_id, dev)
        targets = data.targets(rows)
        model.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
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


ARCHS = ("llava", "qwen2.5-vl", "gemma3")


def train_embedded(cfg: TrainConfig, *, log=print, resume: bool = False) -> dict:
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
            "minutes": {
                "data": round((t1 - t_start) / 60, 2) if not resume else None,
                "vision": round((t2 - t1) / 60, 2),
                "language": round((t_end - t2) / 60, 2),
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
    cfg = TrainConfig(**json.loads(path.read_text()))
    cfg.checkpoint = str(folder)
    return train_embedded(cfg, log=log, resume=True)
