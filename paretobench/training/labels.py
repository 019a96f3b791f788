"""What each visual token shows: per-token labels from a synth8 scene, and the heads that read them."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from paretobench.data import synth
from paretobench.data.tsv import Sample


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


def shown(targets: dict[str, torch.Tensor], label: str) -> torch.Tensor:
    """The tokens that show ``label``: an attribute's own (label > 0), every object token for kind,
    row and column."""
    return targets[label] > 0 if label in ATTRIBUTES else targets["kind"] > 0


def label_loss(heads, feats: torch.Tensor, targets: dict[str, torch.Tensor], shown_only: bool) -> torch.Tensor:
    """Summed cross-entropy of each head's per-token label; with ``shown_only``, an attribute
    head's mean runs over the tokens that show that attribute (see ``TrainingConfig.shown_only``)."""
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
