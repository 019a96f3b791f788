"""``pymoo``: a pymoo multi-objective algorithm driven through its ask/tell interface; SMS-EMOA
(hypervolume-based selection) by default, or NSGA-II / AGE-MOEA.

Decision variables: one value in [0, 1] per layer, kept in non-increasing order by a pymoo
``Repair`` (``Monotone``), so the population holds the schedules it is told the fitness of.
Objectives handed to pymoo: (FLOPs fraction, 1 - accuracy), both minimised.
"""

from __future__ import annotations

import numpy as np

from paretobench.registry import SEARCHERS
from searchers.base import Searcher, monotone

ALGORITHMS = {
    "smsemoa": "pymoo.algorithms.moo.sms:SMSEMOA",
    "nsga2": "pymoo.algorithms.moo.nsga2:NSGA2",
    "agemoea": "pymoo.algorithms.moo.age:AGEMOEA",
}


def _monotone_repair():
    from pymoo.core.repair import Repair

    class Monotone(Repair):
        """Every individual sorted into a non-increasing schedule in [0, 1] (what ``monotone`` makes)."""

        def _do(self, problem, X, **kwargs):
            return -np.sort(-np.clip(X, 0.0, 1.0), axis=1)

    return Monotone()


@SEARCHERS.register("pymoo", doc="pymoo SMS-EMOA (or NSGA-II, AGE-MOEA) on (FLOPs, error)")
class Pymoo(Searcher):
    name = "pymoo"
    version = 2  # 1: the population kept unsorted values (told the fitness of their sorted schedules)

    def __init__(self, space, *, algorithm: str = "smsemoa", population: int = 16, **kw):
        super().__init__(space, **kw)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"pymoo: unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        if population < 2:
            raise ValueError(f"pymoo: population must be >= 2, got {population}")
        import importlib

        from pymoo.core.problem import Problem

        module, _, cls = ALGORITHMS[algorithm].partition(":")
        self.algorithm_name, self.population = algorithm, population
        self.problem = Problem(n_var=space.layers, n_obj=2, xl=0.0, xu=1.0)
        algorithm_cls = getattr(importlib.import_module(module), cls)
        self.algorithm = algorithm_cls(pop_size=population, repair=_monotone_repair())
        self.algorithm.setup(self.problem, termination=("n_eval", self.n), seed=self.seed, verbose=False)
        self._pop = None

    def params(self):
        return {"algorithm": self.algorithm_name, "population": self.population}


    def ask(self):
        if self.asked >= self.n:
            return []
        self._pop = self.algorithm.ask()
        X = self._pop.get("X")[: self.n - self.asked]
        self._pop = self._pop[: len(X)]
        return self._take([monotone(x) for x in X])

    def tell(self, schedules, results):
        from pymoo.problems.static import StaticProblem

        F = np.array([[r.flops_fraction, 1.0 - r.accuracy] for r in results], dtype=float)
        self.algorithm.evaluator.eval(StaticProblem(self.problem, F=F), self._pop)
        self.algorithm.tell(infills=self._pop)
