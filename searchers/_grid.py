"""``grid``: fixed samples of the schedule space, evaluated all at once.

- ``kind="sampled"`` (the paper's appendix C.1.3): each layer's keep fraction drawn
  independently from {0.01, 0.06, ..., 0.96, 0.99}, then put in non-increasing order; ``n``
  distinct schedules (distinct token counts at some layer).
- ``kind="lattice"``: every single-step schedule (keep everything until layer ``l``, then
  ``v`` from the same set), all layers x all values, thinned evenly to ``n`` if there are more.
"""

from __future__ import annotations

import numpy as np

from paretobench.registry import SEARCHERS
from paretobench.schedule import PruningSchedule
from searchers.base import Searcher, monotone

VALUES = tuple(round(0.01 + 0.05 * i, 2) for i in range(20)) + (0.99,)  # 0.01, 0.06, ..., 0.96, 0.99
KINDS = ("sampled", "lattice")


@SEARCHERS.register("grid", doc="the paper's per-layer sampling (C.1.3), or a single-step lattice")
class Grid(Searcher):
    name = "grid"

    def __init__(self, space, *, kind: str = "sampled", **kw):
        super().__init__(space, **kw)
        if kind not in KINDS:
            raise ValueError(f"grid: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        self.kind = kind

    def params(self):
        return {"kind": self.kind}

    def ask(self):
        if self.asked:
            return []
        return self._take(self._lattice() if self.kind == "lattice" else self._sampled())

    def _sampled(self) -> list[PruningSchedule]:
        rng = np.random.default_rng(self.seed)
        seen, out = set(), []
        for _ in range(200 * self.n):  # the space is huge; this bound only guards tiny decoders
            s = monotone(rng.choice(VALUES, self.space.layers))
            key = tuple(s.counts(self.space.n_visual))
            if key not in seen:
                seen.add(key)
                out.append(s)
                if len(out) == self.n:
                    break
        return out

    def _lattice(self) -> list[PruningSchedule]:
        layers = self.space.layers
        all_ = [PruningSchedule.steps(layers, {layer: v}) for layer in range(layers) for v in VALUES]
        if len(all_) <= self.n:
            return all_
        return [all_[i] for i in np.linspace(0, len(all_) - 1, self.n).round().astype(int)]
