"""Evaluations per second of the search harness's evaluator against the naive loop.

The schedules: a grid of ``--n`` (the paper's per-layer sampling, ``grid`` searcher). The
evaluator evaluates them in chunks (``--chunk``) on batches of questions (``--batch-size``),
each batch's images encoded once for the whole chunk. The naive loop runs one full forward
per schedule per question: the image encoded again each time, batch 1, nothing shared. Both
run on the same questions (``--limit`` per family); the naive loop on the first
``--naive-schedules`` schedules only (it is slow), compared per (schedule, question). The
answers of the two are compared too: they must agree.

    python benchmarks/eval_throughput.py [--n 100] [--limit 8] [--naive-schedules 12] [--json]
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
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--limit", type=int, default=8, help="questions per family")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--naive-schedules", type=int, default=12)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from paretobench.evaluator import Evaluator, Workload
    from paretobench.measure import evaluate
    from paretobench.registry import SEARCHERS

    ev = Evaluator(Workload(model=args.model, data=(args.data,), limit=args.limit, pruner=args.pruner,
                            batch_size=args.batch_size, threads=args.threads))  # fmt: skip
    space = ev.space  # loads the model and the data
    schedules = SEARCHERS.get("grid")(space, n=args.n, budgets=(1.0,), seed=0).ask()
    samples, m = ev.samples, ev.loaded

    t0 = time.perf_counter()
    fast = []
    for i in range(0, len(schedules), args.chunk):
        fast += ev.evaluate(schedules[i : i + args.chunk])
    t_fast = time.perf_counter() - t0

    k = min(args.naive_schedules, len(schedules))
    t0 = time.perf_counter()
    naive_correct = []
    for s in schedules[:k]:
        row = []
        for sample in samples:  # one forward per question: encode, prefill, decode, alone
            row += evaluate(m.model, m.processor, [sample], batch_size=1, schedule=s, pruner=ev.pruner).correct
        naive_correct.append(row)
    t_naive = time.perf_counter() - t0

    pairs_fast, pairs_naive = len(schedules) * len(samples), k * len(samples)
    agree = sum(a == b for f, n in zip(fast, naive_correct) for a, b in zip(f.correct, n)) / pairs_naive
    result = {
        "model": args.model, "questions": len(samples), "schedules": len(schedules), "chunk": args.chunk,
        "batch_size": args.batch_size, "naive_schedules": k,
        "evaluator_seconds": t_fast, "naive_seconds": t_naive,
        "evaluator_per_eval_ms": 1000 * t_fast / pairs_fast, "naive_per_eval_ms": 1000 * t_naive / pairs_naive,
        "speedup": (t_naive / pairs_naive) / (t_fast / pairs_fast),
        "answers_agree": agree,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{len(schedules)} schedules x {len(samples)} questions on {args.model}")
        print(f"  evaluator   {result['evaluator_per_eval_ms']:.2f} ms per (schedule, question)  "
              f"[{t_fast:.1f} s, chunk {args.chunk}, batch {args.batch_size}]")
        print(f"  naive loop  {result['naive_per_eval_ms']:.2f} ms per (schedule, question)  "
              f"[{t_naive:.1f} s over the first {k} schedules]")
        print(f"  speedup     {result['speedup']:.1f}x   answers agree on {100 * agree:.1f}% of pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
