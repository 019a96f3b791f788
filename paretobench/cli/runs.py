"""``paretobench runs``: what a results folder holds."""

from __future__ import annotations

import shutil
from pathlib import Path

from paretobench.cli._output import add_json, emit


def add_parser(sub, name):
    p = sub.add_parser(name, help="list the runs of a results folder")
    p.add_argument("out", nargs="?", default="runs", help="results folder (default runs/)")
    p.add_argument("--forget", nargs="+", metavar="RUN", default=[],
                   help="remove these runs (their records and folders) before listing; their evaluations "
                        "stay in the store, so a rerun finds them")  # fmt: skip
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.store import Store

    store = Store(args.out, model=None)
    try:
        if args.forget:
            store.forget_runs(args.forget)
            for name in args.forget:
                shutil.rmtree(Path(args.out) / name, ignore_errors=True)
        meta, runs, total = store.meta(), store.runs(), store.count()
    finally:
        store.close()
    result = {"folder": args.out, "model": meta.get("model_name"), "model_fingerprint": meta.get("model"),
              "evaluations": total, "runs": [
                  {"run": r["run"], "searcher": r["config"]["searcher"], "pruner": r["config"]["pruner"],
                   "n": r["config"]["n"], "evaluations": r["distinct_keys"], "finished": r["finished"] is not None}
                  for r in runs]}  # fmt: skip
    lines = [f"{args.out}: model {result['model']}, {total} evaluations stored, {len(runs)} runs"]
    lines += [f"  {r['run']:<32} {r['searcher']:<8} {r['pruner']:<12} {r['evaluations']:>5} evals"
              + ("" if r["finished"] else "  (unfinished)") for r in result["runs"]]  # fmt: skip
    emit(result, args.json, "\n".join(lines))
    return 0
