"""The VisPCO paper's figures, redrawn from stored runs only (no model is loaded): ``fig2`` (Table
2's searchers' frontiers over the grid's), ``fig3`` (the grid's empirical frontier against
VisPCO's predicted one, per pruner), ``fig6``/``fig7`` (keep curves per kernel at 50%, and per
budget for one kernel). ``paretobench.tables.build`` makes them by name."""

from __future__ import annotations

from pathlib import Path

from paretobench.results import StoredRun, _chosen, _default_kernel_run, _evaluation_of, _vispco, reference
from searchers.vispco import DEFAULT_KERNEL


def _axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    return plt, fig, ax


def _save(plt, fig, ax, path: Path) -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def fig2(runs, out: Path, *, pruner: str = "fastv") -> dict:
    """Table 2's searchers on one figure: each one's frontier over the grid's points and frontier
    (the best run of each searcher by IGD+; every VisPCO configuration its own)."""
    from paretobench.plots import comparison_plot
    from paretobench.results import compare

    ref = reference(runs, pruner)
    if ref is None:
        raise ValueError(f"fig2 needs a grid run of {pruner} (the reference frontier)")
    best: dict[str, tuple[float, StoredRun]] = {}
    for r in runs:
        if r is ref or r.pruner != pruner or r.config["data_key"] != ref.config["data_key"]:
            continue
        d = compare(r.run, ref.run, bootstrap=0)["igd_plus"]
        key = r.label if r.searcher == "vispco" else r.searcher
        if key not in best or d < best[key][0]:
            best[key] = (d, r)
    path = out / f"fig2-{pruner}.png"
    comparison_plot([(key, r.run.F) for key, (_, r) in sorted(best.items())], (f"grid ({ref.run.name})", ref.run.F),
                    path, title=f"Searchers' frontiers against the grid: {pruner} on {ref.config['model']}")  # fmt: skip
    return {"report": "fig2", "png": [str(path)]}


def fig3(runs, out: Path) -> dict:
    made = []
    for pruner in sorted({r.pruner for r in runs}):
        ref = reference(runs, pruner)
        vis = _default_kernel_run(_vispco(runs, pruner, ref.config["data_key"])) if ref else None
        if ref is None or vis is None:
            continue
        plt, fig, ax = _axes()
        F = ref.run.F
        ax.scatter(100 * F[:, 0], 100 * (1 - F[:, 1]), s=8, color="0.75", label=f"grid ({len(F)} schedules)")
        _frontier_vs_predicted(ax, ref, vis, "C0", "C3", "empirical frontier", f"VisPCO predicted ({vis.kernel})")
        ax.set_xlabel("LLM prefill FLOPs (% of unpruned)")
        ax.set_ylabel("accuracy (%, mean over groups)")
        ax.set_title(f"Empirical vs predicted frontier: {pruner} on {ref.config['model']}", fontsize=10)
        path = out / f"fig3-{pruner}.png"
        _save(plt, fig, ax, path)
        made.append(str(path))
    if not made:
        raise ValueError("fig3 needs a grid run and a vispco run of the same pruner on the same questions")
    return {"report": "fig3", "png": made}


def _frontier_vs_predicted(ax, ref: StoredRun, vis: StoredRun, grid_colour, vispco_colour, grid_label, vispco_label):
    """The grid run's empirical frontier (a step line) and VisPCO's evaluated picks (points)."""
    from paretobench import pareto

    front = pareto.frontier(ref.run.F)
    ax.step(100 * front[:, 0], 100 * (1 - front[:, 1]), where="post", color=grid_colour, lw=1.8, label=grid_label)
    pts = sorted((e.flops_fraction, e.accuracy) for e in (_evaluation_of(vis, p) for p in vis.proposals) if e)
    ax.plot([100 * f for f, _ in pts], [100 * a for _, a in pts], "o--", color=vispco_colour, lw=1.5, label=vispco_label)


def fig3_models(folders: list[Path], out: Path, *, pruner: str = "fastv") -> dict:
    """Fig. 3 (middle): every model's empirical frontier (its grid run) and VisPCO's predicted one
    (the default kernel's picks), one colour per model, on one figure; one results folder per model."""
    from paretobench.results import stored_runs

    plt, fig, ax = _axes()
    drawn = []
    for i, folder in enumerate(folders):
        runs = stored_runs(folder)
        ref = reference(runs, pruner)
        vis = _default_kernel_run(_vispco(runs, pruner, ref.config["data_key"])) if ref else None
        if ref is None or vis is None:
            raise ValueError(f"{folder}: fig3-models needs a {pruner} grid run and a vispco run on its questions")
        model = ref.config["model"]
        _frontier_vs_predicted(ax, ref, vis, f"C{i}", f"C{i}", f"{model}: grid frontier ({len(ref.run.evaluations)})",
                               f"{model}: VisPCO ({vis.kernel})")  # fmt: skip
        drawn.append({"model": model, "grid": ref.run.name, "vispco": vis.run.name})
    ax.set_xlabel("LLM prefill FLOPs (% of unpruned)")
    ax.set_ylabel("accuracy (%, mean over groups)")
    ax.set_title(f"Empirical (solid) vs predicted (dashed) frontiers, {pruner}, per model", fontsize=10)
    path = out / "fig3-models.png"
    _save(plt, fig, ax, path)
    return {"report": "fig3-models", "png": str(path), "runs": drawn}


def _curves(out: Path, name: str, title: str, curves: list[tuple[str, list[float]]]) -> dict:
    plt, fig, ax = _axes()
    for label, keep in curves:
        ax.plot(range(len(keep)), [100 * k for k in keep], "o-", ms=3, label=label)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("visual tokens kept (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title, fontsize=10)
    path = out / f"{name}.png"
    _save(plt, fig, ax, path)
    import pandas as pd

    pd.DataFrame([{"curve": label, **{f"layer{i}": k for i, k in enumerate(keep)}} for label, keep in curves]).to_csv(
        out / f"{name}.csv", index=False)  # fmt: skip
    return {"report": name, "png": str(path), "csv": str(out / f"{name}.csv")}


def fig6(runs, out: Path, *, pruner: str = "fastv", budget: float = 0.5) -> dict:
    curves = []
    for r in sorted((r for r in runs if r.searcher == "vispco" and r.pruner == pruner), key=lambda r: r.kernel or ""):
        p = next((p for p in r.proposals if abs(p["budget"] - budget) < 1e-9), None)
        if p is not None:
            curves.append((r.kernel, _chosen(r, p)))
    if not curves:
        raise ValueError(f"fig6 needs vispco runs of {pruner} with a {budget:g} budget")
    return _curves(out, "fig6", f"Keep curves per kernel at the {budget:.0%} budget ({pruner})", curves)


def fig7(runs, out: Path, *, pruner: str = "fastv", kernel: str = DEFAULT_KERNEL) -> dict:
    vis = [r for r in runs if r.searcher == "vispco" and r.pruner == pruner and r.kernel == kernel]
    if not vis:
        raise ValueError(f"fig7 needs a vispco run of {pruner} with the {kernel} kernel")
    curves = [(f"{p['budget']:.0%}", _chosen(vis[-1], p)) for p in vis[-1].proposals]
    return _curves(out, "fig7", f"Keep curves per budget ({kernel}, {pruner})", curves)
