"""PyramidDrop: drop in stages through the decoder, each stage keeping a fixed share of the
previous one.

Score = attention of the last instruction token (the last position) to each visual token,
head-mean, recomputed at the pruning layer from that layer's own q/k projections of its input
(``score_layer = "current"``), over every key (causal mask, fp32 softmax). After each drop the
position ids are renumbered 0..n-1, as the official code does (``positions="repack"``; "keep"
keeps the original ids). Published default (LLaVA-1.5, 32 layers): stages at layers 8, 16 and
24, each keeping lambda = 0.5 of the tokens before it; for our decoders L/4, L/2 and 3L/4
(rounded half up).
"""

from __future__ import annotations

from paretobench.registry import PRUNERS
from pruners.base import Pruner


@PRUNERS.register("pyramiddrop", doc="staged drops, last-token attention at the layer")
class PyramidDrop(Pruner):
    name = "pyramiddrop"
    score_rows = "last"
    score_layer = "current"

    version = 2  # 1: original (gapped) positions after a drop

    def __init__(self, ratio: float = 0.5, positions: str = "repack"):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"pyramiddrop ratio {ratio} must be in [0, 1]")
        if positions not in ("repack", "keep"):
            raise ValueError(f"pyramiddrop positions {positions!r}: valid: repack, keep")
        self.ratio, self.positions = ratio, positions

    def scores(self, ctx):
        return ctx.attention(ctx.last_positions()).mean(1)[:, 0]

    def preset(self, layers):
        from paretobench.schedule import PruningSchedule, keep_count

        stages = sorted({max(1, keep_count(f, layers)) for f in (0.25, 0.5, 0.75)})
        return PruningSchedule.steps(layers, {layer: self.ratio ** (k + 1) for k, layer in enumerate(stages)})

    def params(self):
        return {"ratio": self.ratio, "positions": self.positions}
