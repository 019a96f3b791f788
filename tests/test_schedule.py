"""Schedules, budgets and presets: validation, parsing, and FLOPs fractions worked by hand."""

import math

import pytest

from paretobench import presets
from paretobench.flops import DecoderShape, paper_eq2_flops, prefill_flops
from paretobench.schedule import (
    PruningSchedule,
    ScheduleError,
    check_budget,
    flops_fraction,
    keep_count,
    single_step_for_budget,
    text_only_fraction,
)

# a Llama-like decoder small enough to work FLOPs out by hand
SHAPE = DecoderShape(layers=4, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=10)


@pytest.mark.parametrize(
    "keep, message",
    [
        ((1.0, 1.2, 0.5), "outside"),
        ((1.0, 0.5, 0.7), "never increases"),
        ((1.0, math.nan), "finite"),
        ((1.0, -0.1), "outside"),
        ((), "none"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(keep, message):
    with pytest.raises(ScheduleError, match=message):
        PruningSchedule(keep)


def test_parse_accepts_per_layer_values_and_steps():
    assert PruningSchedule.parse("1, 1, 0.5, 0.5", 4).keep == (1, 1, 0.5, 0.5)
    assert PruningSchedule.parse("1:0.5,3:0.25", 4).keep == (1, 0.5, 0.5, 0.25)
    with pytest.raises(ScheduleError, match="4 decoder layers"):
        PruningSchedule.parse("1,1,0.5", 4)
    with pytest.raises(ScheduleError, match="out of range"):
        PruningSchedule.parse("4:0.5", 4)
    with pytest.raises(ScheduleError, match="mixed"):
        PruningSchedule.parse("1,2:0.5", 4)
    with pytest.raises(ScheduleError, match="cannot read"):
        PruningSchedule.parse("1,1,half,0", 4)


def test_counts_round_half_up():
    assert keep_count(0.5, 9) == 5  # 4.5 -> 5 (Python's round would give 4)
    assert keep_count(0.25, 144) == 36
    assert PruningSchedule((1, 0.5, 0.1, 0)).counts(10) == [10, 5, 1, 0]


def test_flops_fraction_worked_by_hand():
    # one layer, n tokens: projections 2n*8*8 (q) + 2*2n*8*4 (k, v) + 2n*8*8 (o) = 384n;
    # attention 4*n*n*2*4 = 32n^2; MLP 3*2*n*8*16 = 768n  ->  1152n + 32n^2
    def layer(n):
        return 1152 * n + 32 * n * n

    assert prefill_flops(SHAPE, [3, 3, 3, 3]) == 4 * layer(3)
    s = PruningSchedule((1.0, 1.0, 0.5, 0.0))  # 4 visual + 2 text tokens
    want = (2 * layer(6) + layer(4) + layer(2)) / (4 * layer(6))
    assert flops_fraction(SHAPE, s, n_text=2, n_visual=4) == pytest.approx(want)
    floor = 4 * layer(2)
    assert text_only_fraction(SHAPE, 2, 4) == pytest.approx(floor / (4 * layer(6)))
    prunable = (2 * layer(6) + layer(4) + layer(2) - floor) / (4 * layer(6) - floor)
    assert flops_fraction(SHAPE, s, 2, 4, mode="prunable") == pytest.approx(prunable)
    assert paper_eq2_flops(8, [6, 4]) == 24 * 6 * 64 + 4 * 36 * 8 + 24 * 4 * 64 + 4 * 16 * 8


def test_budgets_below_the_text_only_floor_are_refused():
    with pytest.raises(ScheduleError, match="text-only floor"):
        check_budget(0.05, SHAPE, n_text=2, n_visual=4)
    with pytest.raises(ScheduleError, match=r"\(0, 1\]"):
        check_budget(1.5, SHAPE, 2, 4)


def test_single_step_for_budget_is_the_largest_that_fits():
    s = single_step_for_budget(SHAPE, 1, 0.6, n_text=2, n_visual=40)
    assert s.keep[0] == 1 and len(set(s.keep[1:])) == 1
    assert flops_fraction(SHAPE, s, 2, 40) <= 0.6
    count = s.counts(40)[1]
    bigger = PruningSchedule.steps(4, {1: (count + 1) / 40})
    assert flops_fraction(SHAPE, bigger, 2, 40) > 0.6
    with pytest.raises(ScheduleError, match="out of reach"):
        single_step_for_budget(SHAPE, 3, 0.5, n_text=2, n_visual=40)


def test_presets():
    assert presets.resolve("fastv-default", 8).keep == (1, 1) + (0.5,) * 6
    assert presets.resolve("vtw", 8).keep == (1,) * 4 + (0,) * 4
    assert presets.resolve("vtw-2", 8).keep == (1, 1) + (0,) * 6
    aim = presets.resolve("aim", 8).keep
    assert aim[:2] == (1, 1) and aim[-1] == 0 and all(a >= b for a, b in zip(aim, aim[1:]))
    with pytest.raises(ScheduleError, match="unknown preset"):
        presets.resolve("fastv-defualt", 8)
