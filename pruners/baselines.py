"""Reference pruners that use no model signal: ``random`` (seeded per sample and layer) and
``spatial`` (evenly spaced over the image, i.e. best spatial coverage). Every score-based
pruner's margin over these two is what says whether its signal is worth anything."""

from __future__ import annotations

from paretobench.registry import PRUNERS
from pruners.base import Pruner


@PRUNERS.register("random", doc="uniformly random tokens, seeded per sample and layer")
class Random(Pruner):
    name = "random"
    score_rows = "none"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def scores(self, ctx):
        import zlib

        import torch

        # drawn on the CPU (the same numbers on any device), one draw per image token, seeded by
        # the sample, so a row's choice does not depend on the batch it is in
        slot = ctx.state.slot
        draws = torch.zeros(slot.shape[0], max(ctx.state.n_visual))
        for b, key in enumerate(ctx.state.keys):
            g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{key}:{ctx.layer}".encode()))
            draws[b, : ctx.state.n_visual[b]] = torch.rand(ctx.state.n_visual[b], generator=g)
        return torch.gather(draws.to(slot.device), 1, slot.clamp_min(0)).masked_fill(slot < 0, 0.0)

    def params(self):
        return {"seed": self.seed}


@PRUNERS.register("spatial", doc="evenly spaced tokens over the image (coverage)")
class Spatial(Pruner):
    """Keep tokens evenly spaced along the live visual tokens in image (raster) order."""

    name = "spatial"
    score_rows = "none"

    def select(self, ctx, k):
        import torch

        out = []
        for b, count in enumerate(k):
            alive = ctx.visual_positions(b)
            if count == 0:
                out.append(alive[:0])
                continue
            idx = torch.floor((torch.arange(count, dtype=torch.float64) + 0.5) * len(alive) / count).long()
            out.append(alive[idx])
        return out
