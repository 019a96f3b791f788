"""Reference pruners that use no model signal: ``random`` (seeded per sample and layer) and
``spatial`` (evenly spaced over the image, i.e. best spatial coverage). Every score-based
pruner's margin over these two is what says whether its signal is worth anything."""

from __future__ import annotations

from pruners.base import Pruner


class Random(Pruner):
    name = "random"
    score_rows = "none"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def scores(self, ctx):
        import zlib

        import torch

        slot = ctx.state.slot
        out = torch.zeros(slot.shape)
        for b, key in enumerate(ctx.state.keys):  # one draw per image token: the same in any batch
            g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{key}:{ctx.layer}".encode()))
            draw = torch.rand(ctx.state.n_visual[b], generator=g)
            visual = slot[b] >= 0
            out[b, visual] = draw[slot[b, visual]]
        return out

    def config(self):
        return {"name": self.name, "seed": self.seed}


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
