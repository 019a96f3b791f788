"""``paretobench report``: the VisPCO paper's tables and figures from stored runs."""

from __future__ import annotations

import argparse

from paretobench.cli._output import add_json, emit

EXAMPLES = """examples:
  paretobench report table2 --results results/search --out results/
  paretobench report all --results results/search --out results/
  paretobench report table3 --results results/search results/search-qwen --out results/
  paretobench report fig3-models --results results/search results/search-qwen --out results/
reports (see paretobench.tables): table1 (sampled vs VisPCO per pruner and budget), table2 (searchers vs the
grid frontier), table3 (models at 50%: sampled vs VisPCO, one results folder per model), table4 (TTFT, throughput and accuracy from benchmarks/hardware.py's JSON files in --out),
table5 (VisPCO kernels at 50%), gap (relaxed vs realised per budget), fig3 (empirical vs
predicted frontier), fig3-models (every model's empirical and predicted frontiers on one figure), fig6 (keep curves per kernel), fig7 (keep curves per budget). No model is loaded.
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="rebuild the paper's tables and figures from stored runs", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("report", help="table1, table2, table3, table4, table5, gap, fig2, fig3, fig3-models, fig6, fig7, or all")
    p.add_argument("--results", nargs="+", default=["runs"],
                   help="results folder holding the runs (default runs/); table3 and fig3-models take one per model")
    p.add_argument("--out", default="results", help="where the tables and figures go (default results/)")
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from paretobench.tables import REPORTS, build

    names = REPORTS if args.report == "all" else (args.report,)
    if args.report == "all" and len(args.results) > 1:
        raise ValueError("all reads one results folder; compare models with `report table3 --results A B`")
    lines = []
    if args.report == "all" and not any(Path(args.out).glob("hardware-*.json")):
        names = [n for n in names if n != "table4"]
        lines.append(f"table4: skipped, no hardware measurements in {args.out} (benchmarks/hardware.py writes them)")
    made = [build(n, args.results, args.out) for n in names]
    for m in made:
        lines.append(f"{m['report']}: " + ", ".join(str(m[k]) if isinstance(m[k], str) else ", ".join(m[k])
                                                    for k in ("markdown", "csv", "png") if k in m))  # fmt: skip
    emit({"reports": [{k: v for k, v in m.items() if k != "rows"} for m in made]}, args.json, "\n".join(lines))
    return 0
