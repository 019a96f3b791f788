"""Score exported schedules with lmms-eval's own evaluator, in process (``simple_evaluate``).

    python examples/lmms_eval_in_process.py pick.json [pick2.json ...] --data synth8 --limit 10

Each export file (``paretobench export-vlmeval``) becomes a ``ParetoBench`` lmms-eval model; the
questions of ``--data`` (anything ``paretobench eval --data`` takes) become an offline lmms-eval
task in a temporary folder (``paretobench.harnesses.lmms_eval.write_task``), indexed alone, without
lmms-eval's built-in tasks. Prints accuracy overall and per category for each export (``--json``:
as JSON). Needs the harness environment (``make eval-env``).
"""

from __future__ import annotations

import argparse
import json
import tempfile


def evaluate_picks(picks: list[str], data: str, *, limit: int | None = None, batch_size: int = 32) -> dict:
    """``{pick: {"accuracy": ..., "per_category": {...}, "n": ...}}`` by lmms-eval's ``simple_evaluate``."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from paretobench.harnesses.lmms_eval import ParetoBench, write_task

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        task = write_task(data, folder, limit=limit)
        manager = TaskManager(verbosity="WARNING", include_path=folder, include_defaults=False)
        for pick in picks:
            model = ParetoBench(pick=pick, batch_size=batch_size)
            results = simple_evaluate(model=model, tasks=[task.name], task_manager=manager, batch_size=batch_size,
                                      log_samples=False, verbosity="WARNING")  # fmt: skip
            scores = results["results"][task.name]
            out[pick] = {
                "n": results["n-samples"][task.name]["effective"],
                "accuracy": scores["accuracy,none"],
                "per_category": {k.split(",")[0].removeprefix("accuracy_"): v for k, v in scores.items()
                                 if k.startswith("accuracy_") and k.endswith(",none") and "_stderr" not in k},
            }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("picks", nargs="+", metavar="PICK", help="export files from `paretobench export-vlmeval`")
    p.add_argument("--data", default="synth8", help="a registered dataset, a VLMEvalKit .tsv file, or a folder")
    p.add_argument("--limit", type=int, help="first N questions of each file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = evaluate_picks(args.picks, args.data, limit=args.limit, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for pick, r in results.items():
        print(f"{pick}: accuracy {r['accuracy']:.4f} on {r['n']} questions")
        for category, acc in r["per_category"].items():
            print(f"  {category:<12} {acc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
