"""Pareto frontiers and how far one frontier is from another.

Objectives are normalised to "minimise" once, here: a point is ``(flops_fraction, 1 -
accuracy)``, both fractions in [0, 1], so no further scaling is applied and distances read in
budget and accuracy points alike. Non-dominated sorting and IGD / IGD+ / hypervolume are
pymoo's; the Hausdorff distance and the budget-matched accuracy gap are ours (pymoo has none).

Budget-matched accuracy at budget ``b``: the best accuracy among a frontier's points costing at
most ``b`` (None when no point is that cheap). Its gap: reference minus searcher (positive =
the searcher falls short).

Confidence intervals: evaluations keep per-sample correctness, so a bootstrap redraws the
questions (within each group, so every group keeps its size), recomputes every evaluation's
accuracy, both frontiers and every metric; FLOPs fractions are kept as measured.
"""

from __future__ import annotations

import numpy as np

DEFAULT_REF_POINT = (1.0, 1.0)  # (flops fraction, error): the unpruned cost, zero accuracy


def points(flops_fraction, accuracy) -> np.ndarray:
    """(n, 2) minimisation objectives from the two measured columns."""
    f = np.asarray(flops_fraction, dtype=float).reshape(-1)
    a = np.asarray(accuracy, dtype=float).reshape(-1)
    if f.shape != a.shape:
        raise ValueError("flops_fraction and accuracy differ in length")
    return np.stack([f, 1.0 - a], axis=1)


def frontier_mask(F: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``F`` (exact duplicates of a frontier point
    are all on it)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float).reshape(-1, 2)
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def frontier(F: np.ndarray) -> np.ndarray:
    """The distinct non-dominated points of ``F``, cheapest first."""
    F = np.asarray(F, dtype=float).reshape(-1, 2)
    front = np.unique(F[frontier_mask(F)], axis=0)
    return front[np.argsort(front[:, 0], kind="stable")]


def best_under(F: np.ndarray, budget: float) -> float | None:
    """The best accuracy among points costing at most ``budget``."""
    F = np.asarray(F, dtype=float).reshape(-1, 2)
    ok = F[:, 0] <= budget + 1e-12
    return float(1.0 - F[ok, 1].min()) if ok.any() else None


def hausdorff(A: np.ndarray, B: np.ndarray) -> float:
    """The larger of the two directed Hausdorff distances between point sets (Euclidean)."""
    from scipy.spatial.distance import directed_hausdorff

    A, B = np.asarray(A, float), np.asarray(B, float)
    return float(max(directed_hausdorff(A, B)[0], directed_hausdorff(B, A)[0]))


def distances(F: np.ndarray, ref: np.ndarray, *, budgets=(), ref_point=DEFAULT_REF_POINT) -> dict:
    """How far the frontier of points ``F`` is from the frontier of reference points ``ref``.

    ``igd`` / ``igd_plus``: mean distance from each reference frontier point to the searcher's
    frontier (IGD+ counts only the dominated part). ``hv`` / ``hv_ref``: hypervolumes of the two
    frontiers w.r.t. ``ref_point``; ``hv_ratio`` = hv / hv_ref. ``hausdorff``: the worst-case
    distance either way. ``gap``: per budget, reference best accuracy minus the searcher's.
    """
    from pymoo.indicators.hv import HV
    from pymoo.indicators.igd import IGD
    from pymoo.indicators.igd_plus import IGDPlus

    front, ref_front = frontier(F), frontier(ref)
    if not len(front) or not len(ref_front):
        raise ValueError("both frontiers need at least one point")
    hv = HV(ref_point=np.asarray(ref_point, dtype=float))
    hv_run, hv_ref = float(hv(front)), float(hv(ref_front))
    gap = {}
    for b in budgets:
        mine, theirs = best_under(front, b), best_under(ref_front, b)
        gap[f"{b:g}"] = None if mine is None or theirs is None else theirs - mine
    return {
        "igd": float(IGD(ref_front)(front)),
        "igd_plus": float(IGDPlus(ref_front)(front)),
        "hv": hv_run,
        "hv_ref": hv_ref,
        "hv_ratio": hv_run / hv_ref if hv_ref > 0 else float("nan"),
        "hausdorff": hausdorff(front, ref_front),
        "gap": gap,
        "points": int(len(front)),
        "ref_points": int(len(ref_front)),
    }


def group_accuracy(correct: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean over groups of per-group accuracy, for each row of a (n_evals, n_samples) matrix."""
    names = np.unique(groups)
    return np.mean([correct[:, groups == g].mean(axis=1) for g in names], axis=0)


def bootstrap(run: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray], groups, *, budgets=(),
              ref_point=DEFAULT_REF_POINT, n: int = 200, seed: int = 0, level: float = 0.95) -> dict:  # fmt: skip
    """Percentile intervals of every number ``distances`` returns, under resampled questions.

    ``run`` and ``ref`` are ``(flops_fraction (E,), correct (E, S))`` for the same S questions.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    by_group = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    draws: dict[str, list] = {}
    for _ in range(n):
        idx = np.concatenate([rng.choice(ix, len(ix), replace=True) for ix in by_group])
        g = groups[idx]
        d = distances(points(run[0], group_accuracy(run[1][:, idx], g)),
                      points(ref[0], group_accuracy(ref[1][:, idx], g)), budgets=budgets, ref_point=ref_point)  # fmt: skip
        for k, v in _flat(d).items():
            draws.setdefault(k, []).append(v)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for k, vs in draws.items():
        vs = [v for v in vs if v is not None]
        out[k] = [float(np.percentile(vs, lo)), float(np.percentile(vs, hi))] if vs else None
    return out


def _flat(d: dict) -> dict:
    out = {k: v for k, v in d.items() if k != "gap"}
    out.update({f"gap@{b}": v for b, v in d["gap"].items()})
    return out
