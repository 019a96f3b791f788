"""Reading finished runs back: a run folder's config plus its evaluations from the store (with
per-sample correctness), and frontier distances between two runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paretobench.store import Evaluation, Store, StoreError


@dataclass
class Run:
    name: str
    folder: Path
    config: dict
    evaluations: list[Evaluation]  # distinct, in the order first asked
    groups: list[str]  # per sample

    @property
    def F(self) -> np.ndarray:
        from paretobench.pareto import points

        return points([e.flops_fraction for e in self.evaluations], [e.accuracy for e in self.evaluations])

    @property
    def correct(self) -> np.ndarray:
        return np.array([e.correct for e in self.evaluations], dtype=float)

    @property
    def flops(self) -> np.ndarray:
        return np.array([e.flops_fraction for e in self.evaluations])


def load_run(folder: str | Path) -> Run:
    """A run folder written by ``paretobench run`` (its results folder is the parent)."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise StoreError(f"{folder} is not a run folder (no config.json); `paretobench runs DIR` lists them")
    config = json.loads(cfg_path.read_text())
    store = Store(folder.parent, model=None)
    try:
        keys = list(dict.fromkeys(store.run_keys(config["run"])))
        found = store.get_many(keys)
        missing = [k for k in keys if k not in found]
        if not keys or missing:
            raise StoreError(f"{folder}: the store holds {len(found)} of the run's {len(keys)} evaluations")
        _, groups = store.dataset(config["data_key"])
    finally:
        store.close()
    return Run(config["run"], folder, config, [found[k] for k in keys], groups)


def check_same_model(ref: Run, fingerprint: str | None, what: str) -> None:
    """Refuse a reference run measured on other weights than ``fingerprint`` (a frontier
    distance between two models' runs says nothing about a searcher)."""
    theirs = ref.config.get("model_fingerprint")
    if theirs != fingerprint:
        raise StoreError(f"{ref.name} was measured on other model weights ({ref.config.get('model')}, "
                         f"{str(theirs)[:12]}) than {what}, {str(fingerprint)[:12]}: their frontiers "
                         "are not comparable; run the reference on this model")  # fmt: skip


def compare(run: Run, ref: Run, *, budgets=None, ref_point=None, bootstrap: int = 200, seed: int = 0) -> dict:
    """Frontier distances of ``run`` to ``ref`` (see ``paretobench.pareto.distances``), with
    bootstrap intervals when both runs scored the same questions. Both must come from the same
    model weights (``StoreError`` otherwise)."""
    from paretobench import pareto

    check_same_model(ref, run.config.get("model_fingerprint"), f"{run.name} ({run.config.get('model')})")
    budgets = tuple(budgets if budgets is not None else run.config.get("budgets", ()))
    ref_point = tuple(ref_point or pareto.DEFAULT_REF_POINT)
    out = {"run": run.name, "ref": ref.name, "budgets": list(budgets), "ref_point": list(ref_point),
           **pareto.distances(run.F, ref.F, budgets=budgets, ref_point=ref_point)}  # fmt: skip
    same = run.config["data_key"] == ref.config["data_key"]
    if bootstrap and same:
        out["ci95"] = pareto.bootstrap((run.flops, run.correct), (ref.flops, ref.correct), run.groups,
                                       budgets=budgets, ref_point=ref_point, n=bootstrap, seed=seed)  # fmt: skip
    elif bootstrap:
        out["ci95"] = None  # different questions: no paired resampling
    return out


def describe(run: Run) -> dict:
    """A run's own frontier, in numbers."""
    from paretobench import pareto

    F = run.F
    front = pareto.frontier(F)
    return {"run": run.name, "evaluations": len(run.evaluations), "frontier": [
        {"flops_fraction": float(f), "accuracy": float(1 - e)} for f, e in front],
        "hv": pareto.distances(F, F)["hv"]}  # fmt: skip
