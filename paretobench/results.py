"""Reading finished runs back: a run folder's config plus its evaluations from the store (with
per-sample correctness), frontier distances between two runs, and the stored runs of a results
folder as the tables and figures see them (``StoredRun``, ``stored_runs``, ``reference``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paretobench.evaluation import Evaluation
from paretobench.store import Store, StoreError


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


# ----------------------------------------------------------------------------- a results folder's runs


@dataclass
class StoredRun:
    run: object  # paretobench.results.Run
    summary: dict

    @property
    def config(self) -> dict:
        return self.run.config

    @property
    def searcher(self) -> str:
        return self.config["searcher"]

    @property
    def pruner(self) -> str:
        """The pruner's name, with its parameters where the run gave any (``sparsevlm[recycle=0]``):
        runs of one pruner with other parameters are other methods to compare."""
        params = self.config.get("pruner_params") or {}
        inner = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
        return self.config["pruner"] + (f"[{inner}]" if inner else "")

    @property
    def kernel(self) -> str | None:
        return self.config.get("searcher_params", {}).get("kernel")

    @property
    def label(self) -> str:
        """How tables name the run: the searcher and what tells its runs apart (Random-N's N,
        VisPCO's kernel and preset, the preset searcher's schedules)."""
        params = self.config.get("searcher_params", {})
        if self.searcher == "random":
            return f"random-{self.config['n']}"
        if self.searcher == "preset":
            return "preset (" + ", ".join(params.get("names", ["default", "vtw", "aim"])) + ")"
        if self.searcher == "vispco":
            preset = params.get("preset")
            return f"vispco ({preset}: {self.kernel})" if preset else f"vispco ({self.kernel})"
        return self.searcher + (f" ({self.kernel})" if self.kernel else "")

    @property
    def proposals(self) -> list[dict]:
        return (self.summary.get("searcher_report") or {}).get("proposals", [])


def stored_runs(folder: str | Path) -> list[StoredRun]:
    """Every finished run of a results folder, in name order."""
    folder = Path(folder)
    out = []
    for cfg in sorted(folder.glob("*/config.json")):
        summary = cfg.parent / "summary.json"
        if summary.is_file():
            out.append(StoredRun(load_run(cfg.parent), json.loads(summary.read_text())))
    if not out:
        raise ValueError(f"{folder}: no finished runs (write some with `paretobench run --out {folder}`)")
    return out


def reference(runs: list[StoredRun], pruner: str, *, data_key: str | None = None, other_than=None) -> StoredRun | None:
    """The pruner's largest grid run (on ``data_key``'s questions, if given): the empirical
    frontier. ``other_than``: a run folder not to take (a grid run is not its own reference)."""
    grids = [r for r in runs if r.searcher == "grid" and r.pruner == pruner
             and (data_key is None or r.config["data_key"] == data_key) and r.run.folder != other_than]  # fmt: skip
    return max(grids, key=lambda r: len(r.run.evaluations), default=None)


def _vispco(runs, pruner, data_key):
    """The pruner's VisPCO runs on those questions, in name order."""
    return [r for r in runs if r.searcher == "vispco" and r.pruner == pruner and r.config["data_key"] == data_key]




def _default_kernel_run(runs):
    """The run of VisPCO's defaults: the default kernel and no other setting changed."""
    from searchers.vispco import DEFAULT_KERNEL

    plain = [r for r in runs if r.kernel == DEFAULT_KERNEL and not _changed_settings(r)]
    return next(iter(plain), next((r for r in runs if r.kernel == DEFAULT_KERNEL), runs[0] if runs else None))


def _changed_settings(r) -> set:
    """The searcher settings a run gave beyond the training split (``--param``s)."""
    return set(r.config.get("params", {})) - {"train", "kernel"}


def _chosen(stored: StoredRun, proposal: dict) -> list[float]:
    """The schedule VisPCO picked for a budget: the filled curve unless the run said fill=False."""
    fill = stored.config.get("searcher_params", {}).get("fill", False)
    return proposal["filled"] if fill and "filled" in proposal else proposal["schedule"]


def _evaluation_of(stored: StoredRun, proposal: dict):
    keep = [round(k, 9) for k in _chosen(stored, proposal)]
    return next((e for e in stored.run.evaluations if [round(k, 9) for k in e.schedule] == keep), None)


def search_time(r: StoredRun) -> float:
    """What a run's search costs, whichever command computed it: the compute seconds the store
    recorded for each of its evaluations, plus the training of a VisPCO predictor. Unlike
    ``wall_time``, a rerun that finds everything in the store does not make it zero."""
    report = r.summary.get("searcher_report") or {}
    training = (report.get("training") or {}).get("seconds") or 0.0
    return sum(e.seconds for e in r.run.evaluations) + training


def wall_time(summary: dict) -> float:
    """A run's search time: its command's wall time, plus the training of a VisPCO predictor
    that the command loaded from an earlier, interrupted one instead of training it."""
    report = summary.get("searcher_report") or {}
    extra = report["training"]["seconds"] if report.get("predictor_loaded") and report.get("training") else 0.0
    return summary["seconds"] + extra
