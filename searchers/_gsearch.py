"""``gsearch``: a G-Search-style two-phase search (the method has no public code; this follows
its description).

1. Greedy, shallow to deep: the unpruned schedule sets the reference accuracy; then for each
   layer in turn, with the layers before it fixed, the fewest tokens it may keep (from
   ``levels``, never more than the layer before; the layers after it follow it) such that
   accuracy stays within ``tolerance`` of the reference. One ``ask`` per layer.
2. A sigmoid keep curve ``keep(i) = 1 / (1 + exp((i - centre) / width))`` per budget, scaled
   down until its analytic cost fits the budget, its (centre, width) tuned by Bayesian
   optimisation (Optuna's Gaussian-process sampler), the first trial a curve fitted to the
   greedy result. One trial per budget per ``ask``, until ``n`` evaluations are spent.
"""

from __future__ import annotations

import math

import numpy as np

from paretobench.registry import SEARCHERS
from paretobench.schedule import PruningSchedule
from searchers.base import Searcher

LEVELS = (0.0, 0.1, 0.25, 0.5, 0.75)


@SEARCHERS.register("gsearch", doc="greedy per-layer minimum, then a sigmoid curve tuned by BO")
class GSearch(Searcher):
    name = "gsearch"

    def __init__(self, space, *, tolerance: float = 0.01, levels=LEVELS, **kw):
        super().__init__(space, **kw)
        if not 0 <= tolerance < 1:
            raise ValueError(f"gsearch: tolerance must be in [0, 1), got {tolerance}")
        self.tolerance, self.levels = float(tolerance), tuple(sorted(float(v) for v in levels))
        self.reference: float | None = None
        self.greedy: list[float] = []  # keep fractions fixed so far (phase 1)
        self._candidates: list[float] = []
        self._studies = None
        self._trials = []

    def params(self):
        return {"tolerance": self.tolerance, "levels": list(self.levels)}

    # ---------------------------------------------------------------- phase 1
    def _phase1_schedule(self, value: float) -> PruningSchedule:
        i = len(self.greedy)
        return PruningSchedule(tuple(self.greedy) + (value,) * (self.space.layers - i))

    def ask(self):
        if self.asked >= self.n:
            return []
        if self.reference is None:
            return self._take([PruningSchedule.full(self.space.layers)])
        if len(self.greedy) < self.space.layers:
            top = self.greedy[-1] if self.greedy else 1.0
            self._candidates = [v for v in self.levels if v < top]
            if not self._candidates:  # nothing left to drop: the rest keeps the same
                self.greedy += [top] * (self.space.layers - len(self.greedy))
                return self.ask()
            return self._take([self._phase1_schedule(v) for v in self._candidates])
        return self._take(self._phase2_ask())

    def tell(self, schedules, results):
        if self.reference is None:
            self.reference = results[0].accuracy
            return
        if len(self.greedy) < self.space.layers:
            top = self.greedy[-1] if self.greedy else 1.0
            ok = [v for v, r in zip(self._candidates, results) if r.accuracy >= self.reference - self.tolerance]
            self.greedy.append(min(ok) if ok else top)
            return
        for (study, trial), r in zip(self._trials, results):
            study.tell(trial, r.accuracy)

    # ---------------------------------------------------------------- phase 2
    @staticmethod
    def curve(layers: int, centre: float, width: float) -> list[float]:
        return [1.0 / (1.0 + math.exp(min(50.0, (i - centre) / width))) for i in range(layers)]

    def _fit_greedy(self) -> tuple[float, float]:
        """(centre, width) of the sigmoid closest to the greedy schedule (least squares on a grid)."""
        layers, g = self.space.layers, np.array(self.greedy)
        best = min(((c, w) for c in np.linspace(-1, layers, 4 * layers + 5) for w in (0.3, 0.6, 1.0, 2.0, 4.0)),
                   key=lambda cw: float(((np.array(self.curve(layers, *cw)) - g) ** 2).sum()))  # fmt: skip
        return float(best[0]), float(best[1])

    def _phase2_ask(self):
        import optuna

        if self._studies is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            centre, width = self._fit_greedy()
            self._studies = []
            for j, _ in enumerate(self.budgets):
                sampler = optuna.samplers.GPSampler(seed=self.seed + j, n_startup_trials=4)
                study = optuna.create_study(direction="maximize", sampler=sampler)
                study.enqueue_trial({"centre": centre, "width": width})
                self._studies.append(study)
        layers, out, self._trials = self.space.layers, [], []
        for study, budget in zip(self._studies, self.budgets):
            trial = study.ask()
            c = trial.suggest_float("centre", -1.0, float(layers))
            w = trial.suggest_float("width", 0.2, layers / 2, log=True)
            self._trials.append((study, trial))
            out.append(self.space.scaled(self.curve(layers, c, w), budget))
        return out
