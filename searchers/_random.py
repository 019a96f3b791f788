"""``random`` (the paper's Random-N): ``n`` random schedules, each meeting one of the budgets
(taken in turn), the best under each budget being its pick.

A random schedule: a random layer before which everything is kept, then random values in
non-increasing order, the whole curve scaled down until its analytic cost fits the budget.
"""

from __future__ import annotations

import numpy as np

from paretobench.registry import SEARCHERS
from searchers.base import Searcher


@SEARCHERS.register("random", doc="Random-N: n random schedules meeting the budgets")
class Random(Searcher):
    name = "random"

    def ask(self):
        if self.asked:
            return []
        rng = np.random.default_rng(self.seed)
        layers, out = self.space.layers, []
        for i in range(self.n):
            start = int(rng.integers(0, layers))
            curve = [1.0] * start + sorted(rng.random(layers - start), reverse=True)
            out.append(self.space.scaled(curve, self.budgets[i % len(self.budgets)]))
        return self._take(out)
