"""FastV: keep the visual tokens the last position attends to most.

Score = attention of the last position to each token, averaged over heads, in the layer just
before the pruning step (FastV's "layer K-1"). Published default: K = 2, keep 50%.
"""

from __future__ import annotations

from paretobench.registry import PRUNERS
from pruners.base import Pruner


@PRUNERS.register("fastv", doc="last position's head-mean attention, layer before the step")
class FastV(Pruner):
    name = "fastv"
    score_rows = "last"

    def scores(self, ctx):
        return ctx.attention(ctx.last_positions()).mean(1)[:, 0]

    def preset(self, layers):
        from paretobench.schedule import PruningSchedule

        return PruningSchedule.steps(layers, {min(2, layers - 1): 0.5})
