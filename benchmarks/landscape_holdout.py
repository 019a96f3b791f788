"""The pruning landscape from a results folder's stored schedules, measured on held-out questions.

A results folder holds many schedules of one pruner evaluated on the same questions (a run's
``--limit`` per family: the grid, random draws, every searcher's proposals). Among those that
meet the budget (Table 1's window: FLOPs within 5% below it), this picks the ``--k`` best and
the ``--k`` worst *on those questions*, then evaluates them on the benchmark's other questions,
which no search has seen. Picking extremes out of many noisy scores widens their spread; on
held-out questions the picked schedules keep only the part of it that is real. The spread
reported is the held-out accuracy of the best-picked schedule minus that of the worst-picked.

    python benchmarks/landscape_holdout.py [--results results/search] [--pruner fastv]
                                           [--budget 0.5] [--k 3] [--json] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from paretobench.tables import WINDOW


def stored_schedules(results: Path, pruner: str, budget: float):
    """Distinct schedules of ``pruner`` in the folder's runs that meet ``budget``, with the
    questions they were scored on (the runs' data and limit, which must agree)."""
    from paretobench.results import load_run

    found, setting = {}, None
    for folder in sorted(p for p in results.iterdir() if (p / "config.json").is_file()):
        run = load_run(folder)
        if run.config["pruner"] != pruner:
            continue
        here = (tuple(run.config["data"]), run.config["limit"], run.config["model"])
        if setting is not None and here != setting:
            raise ValueError(f"{folder.name} scored other questions or another model ({here}) than {setting}")
        setting = here
        for e in run.evaluations:
            if budget - WINDOW < e.flops_fraction <= budget:
                found.setdefault(tuple(round(k, 6) for k in e.schedule), e)
    if setting is None:
        raise ValueError(f"{results} holds no run of {pruner}")
    return list(found.values()), setting


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/search")
    p.add_argument("--pruner", default="fastv")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--k", type=int, default=3, help="best and worst schedules re-measured")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from paretobench.data.datasets import load_dataset
    from paretobench.measure import evaluate_many
    from paretobench.models.loading import load_model
    from paretobench.registry import PRUNERS
    from paretobench.schedule import PruningSchedule

    t0 = time.time()
    stored, (data, limit, model_name) = stored_schedules(Path(args.results), args.pruner, args.budget)
    if len(stored) < 2 * args.k:
        raise SystemExit(f"only {len(stored)} stored schedules meet the budget; need {2 * args.k}")
    ranked = sorted(stored, key=lambda e: -e.accuracy)
    picked = {"best": ranked[: args.k], "worst": ranked[-args.k :]}
    if limit is None:
        raise SystemExit("the runs scored every question: none is held out")
    seen = {s.index for d in data for s in load_dataset(d, limit=limit).samples}
    heldout = [s for d in data for s in load_dataset(d).samples if s.index not in seen]
    loaded = load_model(model_name, device=args.device)
    pruner = PRUNERS.get(args.pruner)()
    configs = [(PruningSchedule(tuple(e.schedule)), pruner) for group in ("best", "worst") for e in picked[group]]
    results = evaluate_many(loaded.model, loaded.processor, heldout, configs, batch_size=args.batch_size,
                            progress=not args.json)  # fmt: skip
    rows = []
    for (schedule, _), e, r in zip(configs, picked["best"] + picked["worst"], results):
        rows.append({"group": "best" if e in picked["best"] else "worst", "schedule": str(schedule),
                     "flops_fraction": e.flops_fraction, "selection_accuracy": e.accuracy,
                     "heldout_accuracy": r.scores["accuracy"]})  # fmt: skip
    best, worst = rows[0], rows[-1]  # the single best and the single worst on the selection questions
    mean = lambda g, k: sum(r[k] for r in rows if r["group"] == g) / args.k  # noqa: E731
    out = {
        "model": model_name, "data": list(data), "pruner": args.pruner, "budget": args.budget,
        "stored_schedules": len(stored), "selection_questions": len(seen), "heldout_questions": len(heldout),
        "rows": rows,
        "spread_selection_points": 100 * (best["selection_accuracy"] - worst["selection_accuracy"]),
        "spread_heldout_points": 100 * (best["heldout_accuracy"] - worst["heldout_accuracy"]),
        "group_means_heldout_points": {"best": 100 * mean("best", "heldout_accuracy"),
                                       "worst": 100 * mean("worst", "heldout_accuracy")},
        "minutes": round((time.time() - t0) / 60, 1),
    }  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{model_name}, {args.pruner} at {args.budget:g}: {len(stored)} stored schedules meet the budget "
          f"(scored on {len(seen)} questions); the {args.k} best and {args.k} worst on {len(heldout)} held-out ones")
    print("   group  selection  held-out  FLOPs  schedule")
    for r in rows:
        print(f"   {r['group']:<5}  {100 * r['selection_accuracy']:8.1f}  {100 * r['heldout_accuracy']:8.1f}  "
              f"{r['flops_fraction']:.3f}  {r['schedule']}")  # fmt: skip
    print(f"   best - worst: {out['spread_selection_points']:.1f} points on the selection questions, "
          f"{out['spread_heldout_points']:.1f} held out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
