"""The VisPCO paper's tables, rebuilt from stored runs only (no model is loaded); its figures are
``paretobench.figures``, and ``build`` makes either by name.

Every report reads one results folder (``store.sqlite`` + run folders written by
``paretobench run``) and writes Markdown + CSV (and PNG for figures) into an output folder:

- ``table1``: per pruner and budget, mean +- std over sampled schedules meeting the budget (the
  ``grid`` and ``random`` runs' evaluations within ``WINDOW`` below it) against the schedule
  VisPCO gives for that budget; per group and on average (paper Table 1).
- ``table2``: searchers against the reference frontier (the largest ``grid`` run): their
  evaluations, search time and wall time, their pick at 50% (FLOPs, mean accuracy, three groups), IGD+ and the
  hypervolume ratio with bootstrap intervals (paper Table 2, plus the distances it lacked).
- ``table5``: VisPCO kernels at the 50% budget (paper Tables 5/10).
- ``gap``: per VisPCO run and budget, the relaxed cost and KL next to the realised ones.
- ``fig3``: empirical (grid) frontier against VisPCO's predicted one, per pruner.
- ``fig6``/``fig7``: layer-wise keep curves per kernel at 50%, and per budget for one kernel.

Runs are told apart by their config: searcher, pruner, kernel (VisPCO), and the questions they
scored (``data_key``): only runs on the reference run's questions are compared with it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from paretobench.results import (
    _chosen,
    _default_kernel_run,
    _evaluation_of,
    _vispco,
    reference,
    search_time,
    stored_runs,
    wall_time,
)

REPORTS = ("table1", "table2", "table3", "table4", "table5", "gap", "fig2", "fig3", "fig6", "fig7")
CROSS = ("fig3-models",)  # reports over several results folders only (table3 reads one or several)
WINDOW = 0.05  # a sampled schedule "meets" budget B when its FLOPs lie in (B - WINDOW, B + slack]
TABLE1_BUDGETS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
TABLE2_GROUPS = ("colour", "relation", "word")  # recognition, reasoning, reading (synth8)
GAP_BUDGETS = (0.3, 0.5, 0.7)
SAMPLERS = ("grid", "random")  # searchers whose schedules are samples (Table 1's "without VisPCO")


def _mean_std(xs):
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


def _pct(x, std=None):
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _write(out: Path, name: str, title: str, head, rows, records, note: str = "") -> dict:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    md = f"# {title}\n\n" + (note + "\n\n" if note else "") + _markdown(head, rows) + "\n"
    (out / f"{name}.md").write_text(md)
    pd.DataFrame(records).to_csv(out / f"{name}.csv", index=False)
    return {"report": name, "markdown": str(out / f"{name}.md"), "csv": str(out / f"{name}.csv"), "rows": records}


# ----------------------------------------------------------------------------- tables
def sampled_vs_vispco(runs, pruner: str, data_key: str, budget: float, groups) -> tuple[dict, dict | None] | None:
    """At ``budget``: the pruner's sampled schedules (``grid`` and ``random`` runs) within WINDOW
    below it, as mean and std per group, and the default-kernel VisPCO pick evaluated (None
    without one). None when no sampled schedule meets the budget."""
    from searchers.base import BUDGET_SLACK

    pool = {e.key: e for r in runs if r.searcher in SAMPLERS and r.pruner == pruner
            and r.config["data_key"] == data_key for e in r.run.evaluations}  # fmt: skip
    near = [e for e in pool.values() if budget - WINDOW < e.flops_fraction <= budget + BUDGET_SLACK]
    if not near:
        return None
    sampled = {"n": len(near), "flops": _mean_std([e.flops_fraction for e in near]),
               "groups": {g: _mean_std([e.per_category.get(g, 0.0) for e in near]) for g in groups},
               "avg": _mean_std([e.accuracy for e in near])}  # fmt: skip
    vis = _default_kernel_run(_vispco(runs, pruner, data_key))
    pick = {p["budget"]: p for p in (vis.proposals if vis else [])}.get(round(budget, 6))
    ev = None if pick is None else _evaluation_of(vis, pick)
    if ev is None:
        return sampled, None
    mean, std = sampled["avg"]
    return sampled, {"kernel": vis.kernel, "flops": ev.flops_fraction, "avg": ev.accuracy,
                     "groups": {g: ev.per_category.get(g) for g in groups},
                     "sd_above_sampled": (ev.accuracy - mean) / std if std else None}  # fmt: skip


def _comparison_rows(label: list, sampled: dict, vispco: dict | None, groups) -> tuple[list[list], list[dict]]:
    """Table rows (and CSV records) of one ``sampled_vs_vispco`` result; ``label`` leads each row."""
    rows = [label + ["sampled", sampled["n"], _pct(*sampled["flops"])]
            + [_pct(*sampled["groups"][g]) for g in groups] + [_pct(*sampled["avg"])]]  # fmt: skip
    records = [{"method": "sampled", "n": sampled["n"], "flops": sampled["flops"][0],
                **{g: sampled["groups"][g][0] for g in groups}, "avg": sampled["avg"][0], "avg_std": sampled["avg"][1]}]  # fmt: skip
    if vispco is not None:
        beats = vispco["sd_above_sampled"]
        rows.append(label + [f"+ VisPCO ({vispco['kernel']})", 1, _pct(vispco["flops"])]
                    + [_pct(vispco["groups"][g]) for g in groups]
                    + [_pct(vispco["avg"]) + (f" ({beats:+.1f} sd)" if beats is not None else "")])  # fmt: skip
        records.append({"method": "vispco", "n": 1, "flops": vispco["flops"], **vispco["groups"], "avg": vispco["avg"],
                        "avg_std": None, "sd_above_sampled": beats})  # fmt: skip
    return rows, records


SAMPLED_NOTE = (f"Sampled: the distinct schedules of the pruner's `grid` (the paper's C.1.3 sampling) and `random` "
                f"runs whose FLOPs lie within {WINDOW:.0%} below the budget; mean ± std. VisPCO: the schedule its "
                "predictor gives for the budget, evaluated the same way; in brackets, how many standard deviations "
                "it lies above the sampled mean.")  # fmt: skip


def table1(runs, out: Path, *, budgets=TABLE1_BUDGETS) -> dict:
    groups = sorted({g for r in runs for g in r.run.groups})
    head = ["pruner", "budget", "method", "n", "realised FLOPs"] + groups + ["avg"]
    rows, records = [], []
    for pruner in sorted({r.pruner for r in runs}):
        for key in sorted({r.config["data_key"] for r in runs if r.searcher in SAMPLERS and r.pruner == pruner}):
            for b in budgets:
                found = sampled_vs_vispco(runs, pruner, key, b, groups)
                if found is None:
                    continue
                r, rec = _comparison_rows([pruner, f"{b:.0%}"], *found, groups)
                rows += r
                records += [{"pruner": pruner, "budget": b, **x} for x in rec]
    return _write(out, "table1", "Table 1: sampled schedules vs VisPCO, per pruner and budget (accuracy, %)",
                  head, rows, records, SAMPLED_NOTE)  # fmt: skip


def table3(folders: list[Path], out: Path, *, pruner: str = "fastv", budget: float = 0.5) -> dict:
    """Cross-model: per results folder (one model each), the pruner's sampled schedules at the
    budget against VisPCO's pick, and the IGD+ of VisPCO's frontier to that model's grid."""
    from paretobench.results import compare

    per_model = [(f, stored_runs(f)) for f in folders]
    groups = sorted({g for _, runs in per_model for r in runs for g in r.run.groups})
    head = ["model", "results", "method", "n", "realised FLOPs"] + groups + ["avg", "IGD+ to grid"]
    rows, records = [], []
    for folder, runs in per_model:
        model = runs[0].config["model"]
        for key in sorted({r.config["data_key"] for r in runs if r.searcher in SAMPLERS and r.pruner == pruner}):
            found = sampled_vs_vispco(runs, pruner, key, budget, groups)
            if found is None:
                continue
            r, rec = _comparison_rows([model, str(folder)], *found, groups)
            ref, vis = reference(runs, pruner, data_key=key), _default_kernel_run(_vispco(runs, pruner, key))
            igd = compare(vis.run, ref.run, bootstrap=0)["igd_plus"] if ref and vis and found[1] else None
            for row, record in zip(r, rec):  # the sampled row pools the grid's own schedules: no distance
                mine = igd if record["method"] == "vispco" else None
                row.append("n/a" if mine is None else f"{mine:.4f}")
                record["igd_plus_to_grid"] = mine
                record["grid"] = ref.run.name if ref else None
            rows += r
            records += [{"model": model, "results": str(folder), **x} for x in rec]
    if not rows:
        raise ValueError(f"table3 needs {pruner} grid or random runs within {WINDOW:.0%} below {budget:.0%} "
                         "in each results folder")  # fmt: skip
    note = SAMPLED_NOTE + (" IGD+ to grid: the distance of the VisPCO run's frontier (its picks at every budget) "
                           "to the empirical frontier of that model's grid run (0 is on it; n/a: no grid run).")
    return _write(out, "table3", f"Table 3: models at a {budget:.0%} budget ({pruner}), sampled schedules vs VisPCO",
                  head, rows, records, note)  # fmt: skip


def table2(runs, out: Path, *, pruner: str = "fastv", groups=TABLE2_GROUPS, bootstrap: int = 200) -> dict:
    from paretobench.results import compare

    ref = reference(runs, pruner)
    if ref is None:
        raise ValueError(f"table2 needs a grid run of {pruner} (the reference frontier)")
    key = ref.config["data_key"]
    same = [r for r in runs if r.pruner == pruner and r.config["data_key"] == key]
    head = ["searcher", "run", "evaluations", "computed", "search time (s)", "wall time (s)", "FLOPs @50%", *groups, "avg @50%",
            "IGD+", "HV ratio",
            *(f"gap@{b:.0%}" for b in GAP_BUDGETS)]  # fmt: skip
    rows, records = [], []
    for r in sorted(same, key=lambda r: (r.searcher != "grid", r.searcher, r.run.name)):
        d = compare(r.run, ref.run, budgets=GAP_BUDGETS, bootstrap=bootstrap if r is not ref else 0)
        ci = d.get("ci95") or {}
        pick = (r.summary.get("picks") or {}).get("0.5")
        ev = None if pick is None else next((e for e in r.run.evaluations if e.key == pick["key"]), None)

        def with_ci(name, value, scale=1.0, digits=4):
            if value is None:
                return "n/a"
            lo_hi = ci.get(name)
            s = f"{scale * value:.{digits}f}"
            return s + (f" [{scale * lo_hi[0]:.{digits}f}, {scale * lo_hi[1]:.{digits}f}]" if lo_hi else "")

        label = r.label
        rows.append([label, r.run.name, len(r.run.evaluations), r.summary.get("computed"), f"{search_time(r):.0f}",
                     f"{wall_time(r.summary):.0f}",
                     _pct(ev.flops_fraction if ev else None), *(_pct(ev.per_category.get(g) if ev else None) for g in groups),
                     _pct(ev.accuracy if ev else None), with_ci("igd_plus", d["igd_plus"]),
                     with_ci("hv_ratio", d["hv_ratio"], digits=3),
                     *(with_ci(f"gap@{b:g}", d["gap"].get(f"{b:g}"), 100, 1) for b in GAP_BUDGETS)])  # fmt: skip
        records.append({"searcher": label, "run": r.run.name, "evaluations": len(r.run.evaluations),
                        "computed": r.summary.get("computed"), "search_seconds": search_time(r),
                        "seconds": wall_time(r.summary), "flops_at_50": ev.flops_fraction if ev else None,
                        **{g: ev.per_category.get(g) if ev else None for g in groups},
                        "accuracy_at_50": ev.accuracy if ev else None, "igd_plus": d["igd_plus"],
                        "hv_ratio": d["hv_ratio"], **{f"gap_at_{b:g}": d["gap"].get(f"{b:g}") for b in GAP_BUDGETS},
                        "ci95": ci})  # fmt: skip
    note = (f"Reference frontier: `{ref.run.name}` ({len(ref.run.evaluations)} schedules, {pruner}). Search time: the compute "
            "seconds the store recorded for each of the run's evaluations, plus VisPCO's training, whichever command "
            "computed them (evaluations timed while other jobs shared the machine count as measured). Wall time: of the "
            "command that wrote the run folder, which computed `computed` of the evaluations (the rest came from the "
            "store); VisPCO's includes training, also when the command loaded a predictor an earlier one had "
            "trained. Gap: the reference's best accuracy within the budget minus the run's, in points (n/a: one of the two has no schedule within it). Brackets: 95% "
            "bootstrap intervals over questions.")  # fmt: skip
    return _write(out, "table2", f"Table 2: searchers against the {pruner} grid frontier", head, rows, records, note)


def table4(runs, out: Path) -> dict:
    """Hardware: TTFT, throughput and accuracy per model and method, from the measurements
    ``benchmarks/hardware.py`` wrote to ``out/hardware-*.json`` (not from runs: they time nothing
    at batch 1)."""
    files = sorted(out.glob("hardware-*.json"))
    if not files:
        raise ValueError(f"table4 needs {out}/hardware-*.json: run python benchmarks/hardware.py --vispco RUN "
                         f"--out {out}/hardware-MODEL.json")  # fmt: skip
    head = ["model", "device", "method", "budget", "realised FLOPs", "TTFT (ms)", "throughput (tokens/s)", "avg perf."]
    rows, records = [], []
    for f in files:
        m = json.loads(f.read_text())
        for r in m["rows"]:
            # the VisPCO row names the run whose pick it timed (files measured at different times
            # may time different picks)
            method = f"{r['method']} ({m['vispco_run']})" if "VisPCO" in r["method"] and m.get("vispco_run") else r["method"]
            rows.append([m["model"], f"{m['device']} ({m['threads']} threads, {m['dtype']})", method,
                         f"{r['budget']:.0%}", _pct(r["flops_fraction"]),
                         f"{r['ttft_ms']:.1f} ± {r['ttft_ms_sd']:.1f}",
                         f"{r['tokens_per_s']:.1f} ± {r['tokens_per_s_sd']:.1f}", _pct(r["accuracy"])])  # fmt: skip
            records.append({"model": m["model"], "device": m["device"], "threads": m["threads"], **r})
    note = ("Batch 1: each question answered alone. TTFT: image encoding, pruned prefill and first token. "
            "Throughput: a fixed number of new tokens per second, encoding and prefill included. Mean ± sd over "
            "every timing; accuracy over each file's questions. Regenerate: `python benchmarks/hardware.py "
            "--vispco RUN --out results/hardware-MODEL.json`, then `paretobench report table4`.")
    return _write(out, "table4", "Table 4: hardware at the budget (TTFT, throughput, accuracy)", head, rows,
                  records, note)


def table5(runs, out: Path, *, pruner: str = "fastv", budget: float = 0.5, also=(0.4, 0.3)) -> dict:
    ref = reference(runs, pruner)
    key = ref.config["data_key"] if ref else None
    vis = [r for r in runs if r.searcher == "vispco" and r.pruner == pruner and (key is None or r.config["data_key"] == key)]
    if not vis:
        raise ValueError(f"table5 needs vispco runs of {pruner}")
    groups = sorted({g for r in vis for g in r.run.groups})
    head = ["configuration", "schedule", "FLOPs", *groups, "avg", "relaxed KL", "realised KL",
            *(f"avg @{b:.0%}" for b in also)]  # fmt: skip
    rows, records = [], []
    for r in sorted(vis, key=lambda r: r.label):
        at = {}
        for p in r.proposals:
            ev = _evaluation_of(r, p)
            if ev is not None:
                at[round(p["budget"], 6)] = (p, ev)
        if round(budget, 6) not in at:
            continue
        p, ev = at[round(budget, 6)]
        others = {b: at[round(b, 6)][1].accuracy if round(b, 6) in at else None for b in also}
        rows.append([r.label, ",".join(f"{k:.2f}" for k in _chosen(r, p)), _pct(ev.flops_fraction),
                     *(_pct(ev.per_category.get(g)) for g in groups), _pct(ev.accuracy),
                     f"{p['relaxed_kl']:.3f}", f"{p['realised_kl']:.3f}", *(_pct(a) for a in others.values())])  # fmt: skip
        records.append({"configuration": r.label, "kernel": r.kernel, "schedule": _chosen(r, p),
                        "flops": ev.flops_fraction,
                        **{g: ev.per_category.get(g) for g in groups}, "avg": ev.accuracy,
                        "relaxed_kl": p["relaxed_kl"], "realised_kl": p["realised_kl"],
                        **{f"avg_at_{b:g}": a for b, a in others.items()}, "run": r.run.name})  # fmt: skip
    note = (f"Per kernel, VisPCO's pick for the {budget:.0%} budget (per-family accuracy, mean), its KL on held-out "
            "training questions, relaxed and realised, and the mean accuracy of its picks at lower budgets.")
    return _write(out, "table5", f"Table 5: VisPCO kernels at the {budget:.0%} budget ({pruner}, accuracy %)",
                  head, rows, records, note)  # fmt: skip


def gap(runs, out: Path) -> dict:
    head = ["pruner", "kernel", "budget", "relaxed FLOPs", "realised FLOPs", "FLOPs gap", "relaxed KL", "realised KL",
            "KL gap", "accuracy", "filled: FLOPs", "filled: accuracy"]  # fmt: skip
    rows, records = [], []
    for r in (r for r in runs if r.searcher == "vispco"):
        for p in r.proposals:
            rows.append([r.pruner, r.kernel, f"{p['budget']:.0%}", f"{p['relaxed_flops']:.3f}",
                         "n/a" if p["realised_flops"] is None else f"{p['realised_flops']:.3f}",
                         "n/a" if p["flops_gap"] is None else f"{p['flops_gap']:+.3f}", f"{p['relaxed_kl']:.3f}",
                         f"{p['realised_kl']:.3f}", f"{p['kl_gap']:+.3f}", _pct(p["accuracy"]),
                         "n/a" if p.get("filled_flops") is None else f"{p['filled_flops']:.3f}",
                         _pct(p.get("filled_accuracy"))])  # fmt: skip
            records.append({"run": r.run.name, "pruner": r.pruner, "kernel": r.kernel, **{k: p.get(k) for k in (
                "budget", "relaxed_flops", "realised_flops", "flops_gap", "relaxed_kl", "realised_kl", "kl_gap",
                "accuracy", "filled_flops", "filled_accuracy")}})  # fmt: skip
    note = ("Relaxed: what training optimised, the predictor's per-question curves on held-out training questions "
            "(continuous token counts, masked attention). Realised: the one schedule proposed for the budget (mean "
            "curve, whole tokens, scaled into the budget if rounding took it over), physically pruned; FLOPs on the "
            "benchmark's questions, KL on the held-out questions. Filled: the same curve's shape scaled to use the "
            "whole budget (VisPCO's pick unless the run set fill=False).")  # fmt: skip
    return _write(out, "gap", "Relaxed vs realised: VisPCO's cost and KL per budget", head, rows, records, note)


# ----------------------------------------------------------------------------- figures
def build(name: str, folders, out: str | Path) -> dict:
    """Report ``name`` from the runs in ``folders`` (one results folder, or several for table3)."""
    if name not in REPORTS + CROSS:
        import difflib

        close = difflib.get_close_matches(name, REPORTS + CROSS, n=1)
        raise ValueError(f"unknown report {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" (known: {', '.join(REPORTS + CROSS)})")  # fmt: skip
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    from paretobench import figures

    if name == "table3":
        return table3(folders, Path(out))
    if name == "fig3-models":
        return figures.fig3_models(folders, Path(out))
    if len(folders) != 1:
        raise ValueError(f"{name} reads one results folder (table3 and fig3-models compare several); got {len(folders)}")

    make = getattr(figures, name) if name.startswith("fig") else globals()[name]
    return make(stored_runs(folders[0]), Path(out))
