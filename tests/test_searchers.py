"""One suite run against every registered searcher, on a synthetic objective (no model): the
accuracy of a schedule is a smooth, known function of how many tokens it keeps where."""

import math

import pytest

from searchers.base import SearchSpace
from paretobench.flops import DecoderShape
from paretobench.registry import SEARCHERS
from paretobench.schedule import PruningSchedule, ScheduleError, ScoreCost
from paretobench.evaluation import Evaluation
from searchers.base import BUDGET_SLACK, monotone

SHAPE = DecoderShape(layers=8, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=172, vocab=100)
SPACE = SearchSpace(SHAPE, n_text=40, n_visual=144, pruner="fastv", score=ScoreCost(rows="last"))
BUDGETS = (0.4, 0.6)


def objective(s: PruningSchedule) -> float:
    """Early layers matter more: accuracy = 0.3 + 0.6 * weighted mean keep (weights 1/(i+1))."""
    w = [1 / (i + 1) for i in range(s.layers)]
    return 0.3 + 0.6 * sum(k * wi for k, wi in zip(s.keep, w)) / sum(w)


def evaluate(schedules):
    return [Evaluation(key=str(s.keep), data="d", pruner={}, schedule=list(s.keep), flops=0.0, unpruned_flops=1.0,
                       flops_fraction=SPACE.fraction(s), accuracy=objective(s), overall=objective(s),
                       per_category={}, correct=[], live_visual=[], seconds=0.0) for s in schedules]  # fmt: skip


def drive(searcher, limit=10_000):
    asked, told = [], []
    while schedules := searcher.ask():
        assert len(asked) < limit, "the searcher never stops"
        results = evaluate(schedules)
        searcher.tell(schedules, results)
        asked += schedules
        told += results
    return asked, told


# black-box searchers; VisPCO learns from a model and has its own tests (tests/test_vispco.py)
BLACK_BOX = sorted(n for n in SEARCHERS.names() if not SEARCHERS.get(n).needs_model)


@pytest.fixture(params=BLACK_BOX)
def name(request):
    return request.param


def test_every_searcher_proposes_valid_schedules_within_n_and_stops(name):
    searcher = SEARCHERS.get(name)(SPACE, n=24, budgets=BUDGETS, seed=0)
    asked, told = drive(searcher)
    assert asked, "a searcher proposes something"
    assert len(asked) <= max(24, searcher.n)
    for s in asked:
        assert isinstance(s, PruningSchedule) and s.layers == SHAPE.layers
    picks = searcher.picks(told)
    assert set(picks) == set(BUDGETS)
    for b, p in picks.items():
        if p is not None:  # a pick meets its budget and is the best that does
            assert p.flops_fraction <= b + BUDGET_SLACK
            assert p.accuracy == max(r.accuracy for r in told if r.flops_fraction <= b + BUDGET_SLACK)


def test_every_searcher_is_deterministic_given_its_seed(name):
    a, _ = drive(SEARCHERS.get(name)(SPACE, n=16, budgets=BUDGETS, seed=3))
    b, _ = drive(SEARCHERS.get(name)(SPACE, n=16, budgets=BUDGETS, seed=3))
    assert [s.keep for s in a] == [s.keep for s in b]


def test_every_searcher_rejects_bad_settings(name):
    cls = SEARCHERS.get(name)
    with pytest.raises(ValueError, match="n must be"):
        cls(SPACE, n=0, budgets=BUDGETS)
    with pytest.raises(ScheduleError, match="text-only floor"):
        cls(SPACE, n=4, budgets=(SPACE.floor / 2,))
    with pytest.raises(ScheduleError, match=r"in \(0, 1\]"):
        cls(SPACE, n=4, budgets=(1.5,))


@pytest.mark.parametrize("name", ["random", "gsearch"])
def test_budget_targeting_searchers_meet_the_budget_they_aim_at(name):
    searcher = SEARCHERS.get(name)(SPACE, n=30, budgets=BUDGETS, seed=1)
    asked, told = drive(searcher)
    for b in BUDGETS:
        # every budget gets a pick that meets it (here the analytic cost, scoring included, is the
        # realised one) and uses it: a searcher that aims at a budget lands close under it
        pick = searcher.picks(told)[b]
        assert pick is not None and b - 0.05 <= pick.flops_fraction <= b, (b, pick and pick.flops_fraction)
    if name == "random":  # it draws only schedules that meet a budget (G-Search's greedy phase does not)
        assert all(r.flops_fraction <= max(BUDGETS) + 1e-12 for r in told)


def test_scaled_fills_the_budget_in_whole_tokens():
    s = SPACE.scaled([1, 1, 0.8, 0.6, 0.4, 0.2, 0.1, 0.0], 0.5)
    assert SPACE.fraction(s) <= 0.5
    assert all(abs(c - k * 144) < 1e-6 for k, c in zip(s.keep, s.counts(144)))  # whole tokens
    assert SPACE.fraction(s) > 0.49  # filled up to about one token per layer
    # the shape is kept: the curve's ratios survive up to rounding down to whole tokens
    assert s.keep[0] == s.keep[1] and s.keep[-1] == 0 and abs(s.keep[4] / s.keep[0] - 0.4) < 0.02


def test_monotone_sorts_and_clips():
    assert monotone([0.2, 1.3, -0.1, 0.5]).keep == (1.0, 0.5, 0.2, 0.0)


def test_grid_sampled_is_the_papers_value_set_and_lattice_covers_single_steps():
    from searchers._grid import VALUES

    assert VALUES[0] == 0.01 and VALUES[-2] == 0.96 and VALUES[-1] == 0.99 and len(VALUES) == 21
    asked, _ = drive(SEARCHERS.get("grid")(SPACE, n=50, budgets=BUDGETS, seed=0))
    assert len(asked) == 50 and all(k in VALUES for s in asked for k in s.keep)
    assert len({tuple(s.counts(144)) for s in asked}) == 50  # distinct
    lattice, _ = drive(SEARCHERS.get("grid")(SPACE, n=1000, budgets=BUDGETS, kind="lattice"))
    assert len(lattice) == 8 * len(VALUES)
    assert all(len(set(s.keep)) <= 2 for s in lattice)  # one step


def test_gsearch_greedy_phase_finds_the_fewest_tokens_within_tolerance():
    searcher = SEARCHERS.get("gsearch")(SPACE, n=45, budgets=BUDGETS, tolerance=0.05)
    drive(searcher)
    ref = objective(PruningSchedule.full(8))
    g = PruningSchedule(tuple(searcher.greedy))
    assert objective(g) >= ref - 0.05 - 1e-12
    assert searcher.greedy == sorted(searcher.greedy, reverse=True)
    # the greedy result is minimal layer by layer: lowering its first non-zero layer one level breaks it
    i = next(i for i, k in enumerate(g.keep) if k > 0)
    lower = max(v for v in searcher.levels if v < g.keep[i])
    assert objective(PruningSchedule(g.keep[:i] + (lower,) * (8 - i))) < ref - 0.05


def test_nsga2_and_pymoo_improve_on_their_first_generation():
    """Both evolve towards the frontier: the hypervolume of the final population beats that of the
    first generation (on a known, smooth objective)."""
    from paretobench import pareto

    for name in ("nsga2", "pymoo"):
        searcher = SEARCHERS.get(name)(SPACE, n=96, budgets=BUDGETS, seed=0, population=16)
        _, told = drive(searcher)
        F = pareto.points([r.flops_fraction for r in told], [r.accuracy for r in told])
        # the population it ends with (not everything seen, which any search's superset would beat):
        # NSGA-II's last generation; SMS-EMOA (steady state) its surviving population
        final = searcher.algorithm.pop.get("F") if name == "pymoo" else F[-16:]
        first, last = (pareto.distances(G, G)["hv"] for G in (F[:16], final))
        assert math.isfinite(first) and last > first + 1e-3, (name, first, last)
        if name == "pymoo":  # its repair keeps every individual a schedule (non-increasing)
            X = searcher.algorithm.pop.get("X")
            assert (X[:, 1:] <= X[:, :-1] + 1e-12).all()


def test_preset_searcher_runs_the_named_fixed_schedules_alone():
    from paretobench import presets
    from searchers._preset import Preset

    vtw = Preset(SPACE, names="vtw").ask()
    assert vtw == [presets.vtw(8, k) for k in range(1, 8)]
    assert Preset(SPACE, names=["aim"]).ask() == [presets.aim(8)]
    everything = Preset(SPACE).ask()
    assert everything[0] == presets.resolve("fastv-default", 8) and len(everything) == 1 + 7 + 1
    with pytest.raises(ValueError, match="unknown names"):
        Preset(SPACE, names="vtx")
