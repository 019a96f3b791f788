"""``nsga2``: Optuna's NSGA-II on (FLOPs fraction, accuracy), one generation per ``ask``.

Each trial suggests one value in [0, 1] per layer; the schedule keeps them in non-increasing
order (``monotone``). The study lives in memory: the store, not Optuna, keeps the results, and a
resumed run replays the (seeded, deterministic) study against it.
"""

from __future__ import annotations

from paretobench.registry import SEARCHERS
from searchers.base import Searcher, monotone


@SEARCHERS.register("nsga2", doc="Optuna NSGA-II on (FLOPs, accuracy)")
class NSGA2(Searcher):
    name = "nsga2"

    def __init__(self, space, *, population: int = 16, **kw):
        super().__init__(space, **kw)
        if population < 2:
            raise ValueError(f"nsga2: population must be >= 2, got {population}")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.population = population
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=self.seed)
        self.study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
        self._trials = []

    def params(self):
        return {"population": self.population}

    def ask(self):
        size = min(self.population, self.n - self.asked)
        self._trials = [self.study.ask() for _ in range(size)]
        layers = self.space.layers
        return self._take([monotone([t.suggest_float(f"keep{i}", 0.0, 1.0) for i in range(layers)])
                           for t in self._trials])  # fmt: skip

    def tell(self, schedules, results):
        for trial, r in zip(self._trials, results):
            self.study.tell(trial, [r.flops_fraction, r.accuracy])
