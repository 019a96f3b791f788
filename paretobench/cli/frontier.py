"""``paretobench frontier``: a run's frontier, or its distance to a reference run's frontier."""

from __future__ import annotations

import argparse

from paretobench.cli._output import add_json, emit

EXAMPLES = """examples:
  paretobench frontier runs/random-fastv-1a2b3c4d
  paretobench frontier runs/random-fastv-1a2b3c4d --vs runs/grid-fastv-5e6f7a8b --json
  paretobench frontier runs/compare/*-fastv-* --vs runs/compare/grid-fastv-5e6f7a8b   # a table, one row per run
  paretobench frontier runs/compare/*-fastv-* --vs runs/compare/grid-fastv-5e6f7a8b --plot frontiers.png
metrics (objectives: FLOPs fraction and 1 - accuracy, both minimised, no further scaling):
  igd, igd_plus   mean distance from the reference frontier's points to the run's frontier
  hv_ratio        hypervolume of the run's frontier / the reference's (reference point --ref-point)
  hausdorff       the worst distance between the two frontiers, either way
  gap@B           reference's best accuracy within budget B minus the run's (positive: the run falls short)
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="a run's frontier, or its distance to another run's", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("folders", metavar="RUN", nargs="+", help="run folders written by `paretobench run`")
    p.add_argument("--vs", default=None, help="the reference run folder (e.g. a large grid)")
    p.add_argument("--budgets", nargs="+", type=float, default=None, help="budgets for gap@B (default: the run's)")
    p.add_argument("--ref-point", nargs=2, type=float, default=None, metavar=("FLOPS", "ERROR"),
                   help="hypervolume reference point (default 1 1: unpruned cost, zero accuracy)")  # fmt: skip
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for 95%% intervals (0: none)")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="with --vs: draw every run's frontier over the reference's in one figure (PNG)")
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.results import compare, describe, load_run

    if args.vs is None:
        if len(args.folders) > 1 or args.plot:
            raise ValueError("several runs, or a plot, are compared to a reference: give --vs REF_RUN")
        result = describe(load_run(args.folders[0]))
        lines = [f"{result['run']}: {result['evaluations']} evaluations, frontier of {len(result['frontier'])}:"]
        lines += [f"  {p['flops_fraction']:.3f} FLOPs  {p['accuracy']:.4f}" for p in result["frontier"]]
        emit(result, args.json, "\n".join(lines))
        return 0
    ref = load_run(args.vs)
    runs = [load_run(f) for f in args.folders]
    results = [compare(r, ref, budgets=args.budgets, ref_point=args.ref_point, bootstrap=args.bootstrap) for r in runs]
    if args.plot:
        from paretobench.plots import comparison_plot

        comparison_plot([(r.name, r.F) for r in runs], (ref.name, ref.F), args.plot,
                        title=f"frontiers against {ref.name}")  # fmt: skip
    if len(results) > 1:
        emit({"ref": ref.name, "runs": results}, args.json, _table(results))
        return 0
    result = results[0]
    ci = result.get("ci95") or {}

    def fmt(key, value):
        if value is None:
            return "n/a"
        lo_hi = ci.get(key)
        return f"{value:.4f}" + (f"  [{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else "")

    lines = [f"{result['run']} vs {result['ref']} ({result['points']} vs {result['ref_points']} frontier points)"]
    for k in ("igd", "igd_plus", "hv_ratio", "hausdorff"):
        lines.append(f"  {k:<10} {fmt(k, result[k])}")
    for b, g in result["gap"].items():
        lines.append(f"  gap@{b:<6} {fmt(f'gap@{b}', g)}")
    emit(result, args.json, "\n".join(lines))
    return 0


def _table(results: list[dict]) -> str:
    """One row per run: the metrics, 95% intervals in brackets where computed."""
    budgets = list(dict.fromkeys(b for r in results for b in r["gap"]))  # runs may target different budgets
    head = ["run", "points", "igd", "igd_plus", "hv_ratio", "hausdorff", *(f"gap@{b}" for b in budgets)]
    lines = [f"vs {results[0]['ref']} ({results[0]['ref_points']} frontier points)", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]  # fmt: skip
    for r in results:
        ci = r.get("ci95") or {}

        def cell(key, value):
            if value is None:
                return "n/a"
            lo_hi = ci.get(key)
            return f"{value:.4f}" + (f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")

        row = [r["run"], str(r["points"]), *(cell(k, r[k]) for k in ("igd", "igd_plus", "hv_ratio", "hausdorff")),
               *(cell(f"gap@{b}", r["gap"].get(b)) for b in budgets)]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
