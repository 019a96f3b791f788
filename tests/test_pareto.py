"""Frontier extraction and distances, against hand-worked fronts and pymoo's own indicators."""

import numpy as np
import pytest

from paretobench import pareto


def brute_force_front(F):
    keep = []
    for i, p in enumerate(F):
        dominated = any((q <= p).all() and (q < p).any() for j, q in enumerate(F) if j != i)
        keep.append(not dominated)
    return np.array(keep)


def test_frontier_mask_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(20):
        F = rng.random((40, 2)).round(2)  # rounding makes ties and duplicates
        assert (pareto.frontier_mask(F) == brute_force_front(F)).all()


def test_points_turn_accuracy_into_error():
    F = pareto.points([0.5, 1.0], [0.8, 0.9])
    assert F.tolist() == [[0.5, pytest.approx(0.2)], [1.0, pytest.approx(0.1)]]
    with pytest.raises(ValueError, match="differ in length"):
        pareto.points([0.5], [0.8, 0.9])


def test_distances_on_a_hand_worked_pair_of_fronts():
    # reference frontier: (0.2, 0.4), (0.5, 0.2), (1.0, 0.1)    (flops, error)
    ref = np.array([[0.2, 0.4], [0.5, 0.2], [1.0, 0.1]])
    # run frontier: the same shape shifted 0.1 up in error, plus a dominated point
    run = np.array([[0.2, 0.5], [0.5, 0.3], [1.0, 0.2], [0.6, 0.6]])
    d = pareto.distances(run, ref, budgets=(0.3, 0.5, 0.1), ref_point=(1.1, 1.0))
    assert d["points"] == 3 and d["ref_points"] == 3
    assert d["igd"] == pytest.approx(0.1)  # every reference point is 0.1 from its shifted twin
    assert d["igd_plus"] == pytest.approx(0.1)
    assert d["hausdorff"] == pytest.approx(0.1)
    # hypervolumes by hand: staircases w.r.t. (1.1, 1.0)
    hv_ref = 0.3 * 0.6 + 0.5 * 0.8 + 0.1 * 0.9
    hv_run = 0.3 * 0.5 + 0.5 * 0.7 + 0.1 * 0.8
    assert d["hv_ref"] == pytest.approx(hv_ref) and d["hv"] == pytest.approx(hv_run)
    assert d["hv_ratio"] == pytest.approx(hv_run / hv_ref)
    # budget-matched gap: best accuracy within 0.3 is 0.6 vs 0.5, within 0.5: 0.8 vs 0.7; none within 0.1
    assert d["gap"]["0.3"] == pytest.approx(0.1) and d["gap"]["0.5"] == pytest.approx(0.1)
    assert d["gap"]["0.1"] is None


def test_distances_agree_with_pymoo_on_random_fronts():
    from pymoo.indicators.hv import HV
    from pymoo.indicators.igd import IGD
    from pymoo.indicators.igd_plus import IGDPlus

    rng = np.random.default_rng(1)
    for _ in range(10):
        A, B = rng.random((30, 2)), rng.random((25, 2))
        fa, fb = A[brute_force_front(A)], B[brute_force_front(B)]
        d = pareto.distances(A, B)
        assert d["igd"] == pytest.approx(IGD(fb)(fa))
        assert d["igd_plus"] == pytest.approx(IGDPlus(fb)(fa))
        assert d["hv"] == pytest.approx(HV(ref_point=np.array([1.0, 1.0]))(fa))
        # Hausdorff by its definition, with plain loops
        def directed(X, Y):
            return max(min(np.hypot(*(x - y)) for y in Y) for x in X)

        assert d["hausdorff"] == pytest.approx(max(directed(fa, fb), directed(fb, fa)))


def test_a_frontier_is_at_distance_zero_from_itself():
    F = np.array([[0.2, 0.4], [0.5, 0.2], [0.7, 0.5]])
    d = pareto.distances(F, F, budgets=(0.5,))
    assert d["igd"] == 0 and d["hausdorff"] == 0 and d["hv_ratio"] == 1 and d["gap"]["0.5"] == 0


def test_bootstrap_intervals_contain_the_point_estimate_and_shrink_with_more_questions():
    rng = np.random.default_rng(2)
    flops = np.array([0.3, 0.5, 0.8, 1.0])
    p = np.array([0.55, 0.65, 0.7, 0.72])

    def interval_width(n_questions):
        groups = np.repeat(["a", "b"], n_questions // 2)
        run = (rng.random((4, n_questions)) < p[:, None]).astype(float)
        ref = (rng.random((4, n_questions)) < (p[:, None] + 0.03)).astype(float)
        ci = pareto.bootstrap((flops, run), (flops, ref), groups, budgets=(0.5,), n=100, seed=0)
        point = pareto.distances(pareto.points(flops, pareto.group_accuracy(run, groups)),
                                 pareto.points(flops, pareto.group_accuracy(ref, groups)), budgets=(0.5,))
        lo, hi = ci["hv_ratio"]
        assert lo <= point["hv_ratio"] <= hi
        return hi - lo

    assert interval_width(2000) < interval_width(100)


def test_group_accuracy_averages_groups_equally():
    correct = np.array([[1, 1, 1, 0], [0, 0, 0, 1]], dtype=float)
    groups = np.array(["a", "a", "a", "b"])
    assert pareto.group_accuracy(correct, groups).tolist() == [0.5, 0.5]
