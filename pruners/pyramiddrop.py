"""PyramidDrop: drop in stages through the decoder, each stage keeping a fixed share of the
previous one.

Score = attention of the last instruction token (the last position) to each visual token,
head-mean, recomputed at the pruning layer from that layer's own q/k projections of its input
(``score_layer = "current"``). Published default: stages at L/4, L/2 and 3L/4, each keeping
lambda = 0.5 of the tokens before it.
"""

from __future__ import annotations

from pruners.base import Pruner


class PyramidDrop(Pruner):
    name = "pyramiddrop"
    score_rows = "last"
    score_layer = "current"

    def __init__(self, ratio: float = 0.5):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"pyramiddrop ratio {ratio} must be in [0, 1]")
        self.ratio = ratio

    def scores(self, ctx):
        return ctx.attention(ctx.last_positions()).mean(1)[:, 0]

    def preset(self, layers):
        from paretobench.schedule import PruningSchedule

        stages = sorted({max(1, round(layers * f)) for f in (0.25, 0.5, 0.75)})
        return PruningSchedule.steps(layers, {layer: self.ratio ** (k + 1) for k, layer in enumerate(stages)})

    def params(self):
        return {"ratio": self.ratio}
