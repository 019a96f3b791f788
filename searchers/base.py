"""The ``Searcher`` interface: a searcher proposes schedules and learns from their results; it
never evaluates and never stores (the run loop in ``paretobench.run_loop`` does both).

    searcher = Random(space, n=40, budgets=(0.3, 0.5, 0.7), seed=0)
    while schedules := searcher.ask():
        searcher.tell(schedules, evaluate(schedules))

A searcher is deterministic given its arguments and what it is told: that is what lets an
interrupted run resume by replaying the searcher against the store (every finished evaluation
comes back from the store at once, and the searcher asks again exactly what it asked before).

Every searcher maps raw parameters to a schedule the same way (``monotone``): one value per
layer, sorted into non-increasing order, so any non-increasing schedule is reachable and none
is proposed twice in different orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from paretobench.schedule import FREE, PruningSchedule, ScheduleError, ScoreCost

if TYPE_CHECKING:
    from paretobench.evaluation import Evaluation

DEFAULT_BUDGETS = (0.3, 0.5, 0.7)
# Realised FLOPs include the pruner's score rows, which a schedule's analytic cost does not
# see; an evaluation "meets" a budget when its realised fraction is at most this much above it.
BUDGET_SLACK = 0.005


@dataclass(frozen=True)
class SearchSpace:
    """What a searcher may know about the problem: the decoder's shape and the mean token
    counts of the inputs, enough to cost a schedule analytically before it is evaluated."""

    shape: object  # paretobench.flops.DecoderShape
    n_text: int
    n_visual: int
    mode: str = "total"  # budget convention, see paretobench.schedule
    pruner: str = ""  # the pruner's registered name (a searcher may try its published schedule)
    score: ScoreCost = FREE  # what the pruner's scoring costs per step (part of the realised FLOPs)

    @property
    def layers(self) -> int:
        return self.shape.layers

    def fraction(self, schedule: PruningSchedule) -> float:
        """The schedule's cost, scoring included, as a fraction of the unpruned prefill."""
        from paretobench.schedule import flops_fraction

        return flops_fraction(self.shape, schedule, self.n_text, self.n_visual, self.mode, self.score)

    @property
    def floor(self) -> float:
        """The cheapest reachable cost: every visual token dropped before layer 0."""
        return self.fraction(PruningSchedule((0.0,) * self.layers))

    def scaled(self, curve, budget: float) -> PruningSchedule:
        """The largest multiple ``s * curve`` (0 <= s <= 1) of a non-increasing keep curve, in
        whole tokens (rounded down), whose cost stays within ``budget``."""
        nv, curve = self.n_visual, [float(c) for c in curve]

        def at(s: float) -> PruningSchedule:
            return PruningSchedule(tuple(math.floor(s * c * nv + 1e-9) / nv for c in curve))

        if self.fraction(at(0.0)) > budget + 1e-12:
            raise ValueError(f"budget {budget:g} is below the cheapest schedule's cost {self.floor:.3f}")
        if self.fraction(at(1.0)) <= budget:
            return at(1.0)
        lo, hi = 0.0, 1.0
        for _ in range(30):  # bisection on s; the cost never decreases as s grows
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.fraction(at(mid)) <= budget else (lo, mid)
        return at(lo)


def monotone(values: Sequence[float]) -> PruningSchedule:
    """Per-layer values in [0, 1] -> the schedule keeping them in non-increasing order."""
    return PruningSchedule(tuple(sorted((min(1.0, max(0.0, float(v))) for v in values), reverse=True)))


class Searcher:
    """Subclasses set ``name`` and implement ``ask`` (and ``tell`` when they learn).

    ``n`` is the number of evaluations the searcher may ask for; ``budgets`` the FLOPs
    fractions it targets (those it picks a schedule for); ``seed`` makes it repeatable.
    """

    name: str = ""
    # bumped whenever what this searcher proposes changes; a version other than 1 is part of the
    # run's name (``identity``), so a changed algorithm makes another run, never a replay mismatch
    version: int = 1
    # a searcher that learns from the model itself (VisPCO) gets it through ``prepare``
    needs_model: bool = False
    # the keys of ``report`` that tell what the command did rather than what the run found (VisPCO:
    # whether it loaded its predictor); a rerun that computes nothing keeps the first run's
    account: tuple[str, ...] = ()

    def __init__(self, space: SearchSpace, *, n: int = 40, budgets: Sequence[float] = DEFAULT_BUDGETS,
                 seed: int = 0):  # fmt: skip
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{self.name}: n must be a positive integer, got {n!r}")
        budgets = tuple(float(b) for b in budgets)
        if not budgets:
            raise ValueError(f"{self.name}: give at least one budget")
        for b in budgets:
            if not math.isfinite(b) or not 0 < b <= 1:
                raise ScheduleError(f"budget {b} must be in (0, 1]")
            if b < space.floor - 1e-9:
                raise ScheduleError(f"budget {b:g} is below the text-only floor {space.floor:.3f} of these inputs: "
                                    "even dropping every visual token before layer 0 costs more")  # fmt: skip
        self.space, self.n, self.budgets, self.seed = space, n, budgets, seed
        self.asked = 0

    @classmethod
    def settings(cls) -> set[str]:
        """The searcher's own keyword settings (``--param KEY=VALUE``); n, budgets and seed
        have flags of their own."""
        import inspect

        names = set()
        for klass in cls.__mro__:
            if klass is not Searcher and "__init__" in vars(klass):
                sig = inspect.signature(vars(klass)["__init__"])
                names |= {n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
        return names

    @classmethod
    def check_settings(cls, params: dict) -> None:
        """A clear error for a setting the searcher does not take, before anything loads."""
        import difflib

        known = cls.settings()
        for key in params:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                valid = f"valid: {', '.join(sorted(known))}" if known else "it takes none"
                raise ValueError(f"{cls.name} takes no setting {key!r}{hint} ({valid})")

    @classmethod
    def check_pruner(cls, pruner) -> None:
        """A clear error, before anything loads, for a pruner this searcher cannot work with
        (every searcher but VisPCO takes any)."""

    def prepare(self, evaluator, folder, *, progress: bool = True) -> None:
        """Called once by the run loop before the first ``ask``, with the run's ``Evaluator``
        (its loaded model, pruner and data) and run folder; black-box searchers ignore it."""

    def ask(self) -> list[PruningSchedule]:
        """The next schedules to evaluate; an empty list when the search is over."""
        raise NotImplementedError

    def tell(self, schedules: list[PruningSchedule], results: list[Evaluation]) -> None:
        """The evaluations of the schedules of the last ``ask``, in the same order."""

    def picks(self, results: list[Evaluation]) -> dict[float, Evaluation | None]:
        """Per budget, the schedule this searcher recommends: by default the most accurate of
        its evaluations that meets the budget (ties: the cheaper, then the earlier)."""
        out = {}
        for b in self.budgets:
            ok = [r for r in results if r.flops_fraction <= b + BUDGET_SLACK]
            out[b] = max(ok, key=lambda r: (r.accuracy, -r.flops_fraction), default=None)
        return out

    def report(self, results: list[Evaluation]) -> dict:
        """What the searcher has to say about its run beyond the picks (kept in summary.json)."""
        return {}

    def params(self) -> dict:
        """The searcher's own settings beyond n, budgets and seed (recorded in the run config)."""
        return {}

    def identity(self) -> dict:
        """Settings resolved from the searcher's defaults that determine its results, for the
        run's name (so a changed default is another run); black-box searchers name theirs by
        the command line alone, and their algorithm's version where it is not 1."""
        return {} if self.version == 1 else {"version": self.version}

    def _take(self, schedules: list[PruningSchedule]) -> list[PruningSchedule]:
        """At most what is left of the ``n`` evaluations; counts them as asked."""
        schedules = schedules[: self.n - self.asked]
        self.asked += len(schedules)
        return schedules
