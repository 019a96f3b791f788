"""Figures, drawn with matplotlib's non-interactive backend (no display needed)."""

from __future__ import annotations

from pathlib import Path


def frontier_plot(table, path: Path, *, title: str = "", reference=None, reference_label: str = "reference") -> None:
    """Every evaluated point, the frontier as a staircase, the searcher's picks circled;
    optionally a reference frontier (a table with ``flops_fraction`` and ``accuracy``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.scatter(100 * table.flops_fraction, 100 * table.accuracy, s=12, color="0.6", label="evaluated", zorder=1)
    front = table[table.on_frontier].sort_values("flops_fraction")
    ax.step(100 * front.flops_fraction, 100 * front.accuracy, where="post", color="C0", lw=1.8,
            label="frontier", zorder=2)  # fmt: skip
    ax.scatter(100 * front.flops_fraction, 100 * front.accuracy, s=18, color="C0", zorder=3)
    if reference is not None and len(reference):
        ref = reference.sort_values("flops_fraction")
        ax.step(100 * ref.flops_fraction, 100 * ref.accuracy, where="post", color="C3", lw=1.2, ls="--",
                label=reference_label, zorder=2)  # fmt: skip
    picks = table[table.pick_for.astype(str) != ""]
    if len(picks):
        ax.scatter(100 * picks.flops_fraction, 100 * picks.accuracy, s=90, facecolors="none", edgecolors="C1",
                   linewidths=1.6, label="picks", zorder=4)  # fmt: skip
    ax.set_xlabel("LLM prefill FLOPs (% of unpruned)")
    ax.set_ylabel("accuracy (%, mean over groups)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def comparison_plot(runs: list[tuple[str, object]], reference: tuple[str, object], path: Path, *,
                    title: str = "") -> None:  # fmt: skip
    """Every run's frontier as a staircase over the reference's points and frontier, on one figure:
    ``runs`` and ``reference`` are (label, F) with F an (n, 2) array of (FLOPs fraction, 1 - accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paretobench.pareto import frontier

    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    label, F = reference
    ax.scatter(100 * F[:, 0], 100 * (1 - F[:, 1]), s=6, color="0.8", label=f"{label}: {len(F)} schedules", zorder=1)
    front = frontier(F)
    ax.step(100 * front[:, 0], 100 * (1 - front[:, 1]), where="post", color="k", lw=2.0, label=f"{label} frontier",
            zorder=2)  # fmt: skip
    for i, (name, G) in enumerate(runs):
        front = frontier(G)
        ax.step(100 * front[:, 0], 100 * (1 - front[:, 1]), where="post", lw=1.3, color=f"C{i % 10}", label=name,
                zorder=3)  # fmt: skip
        ax.scatter(100 * front[:, 0], 100 * (1 - front[:, 1]), s=10, color=f"C{i % 10}", zorder=3)
    ax.set_xlabel("LLM prefill FLOPs (% of unpruned)")
    ax.set_ylabel("accuracy (%, mean over groups)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
