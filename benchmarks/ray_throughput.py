"""Ray runner against the local runner on the same machine: evaluations per second.

The same ``--n`` grid schedules are evaluated twice: by ``LocalRunner`` (one process, torch
using every core) and by ``RayRunner`` with ``--workers`` actors (the cores shared evenly
among them). Ray's start-up and the actors' model loading are timed separately and excluded
from the throughput (they are paid once per run, not per evaluation). Results must agree.

    python benchmarks/ray_throughput.py [--n 24] [--limit 16] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from paretobench.registry import DEFAULT_MODEL


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", default="synth8")
    p.add_argument("--pruner", default="fastv")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--limit", type=int, default=16, help="questions per family")
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from paretobench.evaluator import Evaluator, Workload
    from paretobench.registry import SEARCHERS
    from paretobench.runners import LocalRunner, RayRunner

    workload = Workload(model=args.model, data=(args.data,), limit=args.limit, pruner=args.pruner)
    ev = Evaluator(workload)
    schedules = SEARCHERS.get("grid")(ev.space, n=args.n, budgets=(1.0,), seed=0).ask()
    chunks = [(i, schedules[i : i + args.chunk]) for i in range(0, len(schedules), args.chunk)]

    def timed(runner):
        t0 = time.perf_counter()
        out = {}
        for _, evs in runner.run(chunks):
            out.update({e.key: e.accuracy for e in evs})
        return time.perf_counter() - t0, out

    t_local, local = timed(LocalRunner(ev))
    t0 = time.perf_counter()
    ray_runner = RayRunner(workload, workers=args.workers)
    list(ray_runner.run([(i, schedules[:1]) for i in range(args.workers)]))  # every actor up, model loaded
    t_start = time.perf_counter() - t0
    try:
        t_ray, remote = timed(ray_runner)
    finally:
        ray_runner.close()
    result = {
        "schedules": len(schedules), "questions": len(ev.samples), "workers": args.workers,
        "local_seconds": t_local, "ray_seconds": t_ray, "ray_startup_seconds": t_start,
        "ray_over_local_throughput": t_local / t_ray, "results_agree": local == remote,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{len(schedules)} schedules x {len(ev.samples)} questions")
        print(f"  local  {t_local:.1f} s")
        print(f"  ray    {t_ray:.1f} s with {args.workers} actors (+{t_start:.1f} s start-up, model loading)")
        print(f"  ray / local throughput {t_local / t_ray:.2f}; results agree: {local == remote}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
