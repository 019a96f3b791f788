"""The pruning landscape of the embedded model at one FLOPs budget.

1. FastV under many schedules that meet the budget, all evaluated on the same questions: one
   step at each reachable layer, two steps at pairs of layers, and schedules drawn as the
   paper's appendix C.1.3 draws them (each layer's keep from {0.01, 0.06, ..., 0.99}, sorted).
   "Meets" is Table 1's window: FLOPs within 5% below the budget. The spread between the best
   and the worst schedule is what a schedule search can win.
2. Every registered pruner under one shared schedule (one step at FastV's default layer, sized
   to the budget): each one's margin over ``random`` and ``spatial`` (evenly spaced) keeps.
3. Every pruner's own preset, end to end, with the FLOPs it spends.

Images are encoded once per batch and shared by all configurations.

    python benchmarks/landscape.py [--budget 0.5] [--limit 250] [--sampled 16] [--json]
                                   [--out results/landscape-synth8.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from paretobench.registry import DEFAULT_MODEL
from paretobench.tables import WINDOW


def budget_schedules(shape, n_text: int, n_visual: int, budget: float, limit: int):
    """Distinct step schedules meeting ``budget``: one step at every layer that can reach it, then
    two steps (first at a share of the tokens, the second as large as the budget allows);
    schedules whose token counts differ by at most two tokens at every layer count once."""
    from paretobench.schedule import PruningSchedule, ScheduleError, flops_fraction, single_step_for_budget

    out: dict[str, PruningSchedule] = {}

    def add(s):
        # a second step within a couple of tokens of the first is the same schedule in practice
        counts = s.counts(n_visual)
        meets = budget - WINDOW < flops_fraction(shape, s, n_text, n_visual) <= budget
        if meets and all(max(abs(a - b) for a, b in zip(counts, o.counts(n_visual))) > 2 for o in out.values()):
            out[str(s)] = s

    for layer in range(shape.layers):
        try:
            add(single_step_for_budget(shape, layer, budget, n_text, n_visual))
        except ScheduleError:
            continue
    for first in range(shape.layers):
        for second in range(first + 1, shape.layers):
            for r1 in (0.75, 0.5, 0.3):
                best = None
                for count in range(int(r1 * n_visual), -1, -1):
                    s = PruningSchedule.steps(shape.layers, {first: r1, second: count / n_visual})
                    if flops_fraction(shape, s, n_text, n_visual) <= budget:
                        best = s
                        break
                if best is not None and best.counts(n_visual)[second] > 0:
                    add(best)
    schedules = list(out.values())
    if len(schedules) > limit:  # spread the pick over the list (it is ordered by layer)
        step = len(schedules) / limit
        schedules = [schedules[int(i * step)] for i in range(limit)]
    return schedules


def sampled_schedules(shape, n_text: int, n_visual: int, budget: float, n: int, seed: int = 0):
    """``n`` distinct schedules meeting ``budget``, drawn as the paper's appendix C.1.3 (and the
    ``grid`` searcher) draws them; the first ``n`` that meet it, in the seeded order."""
    import numpy as np

    from paretobench.schedule import flops_fraction
    from searchers._grid import VALUES
    from searchers.base import monotone

    rng = np.random.default_rng(seed)
    seen, out = set(), []
    for _ in range(20_000):
        s = monotone(rng.choice(VALUES, shape.layers))
        key = tuple(s.counts(n_visual))
        if key not in seen and budget - WINDOW < flops_fraction(shape, s, n_text, n_visual) <= budget:
            seen.add(key)
            out.append(s)
            if len(out) == n:
                break
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", default="synth8")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--limit", type=int, default=None, help="questions per family (default: all)")
    p.add_argument("--schedules", type=int, default=24, help="FastV step schedules in part 1")
    p.add_argument("--sampled", type=int, default=16, help="FastV schedules drawn as C.1.3 draws them, in part 1")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda, ...")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from paretobench import presets
    from paretobench.adapters import adapter_for, text_token_counts
    from paretobench.data.datasets import load_dataset
    from paretobench.flops import DecoderShape
    from paretobench.measure import evaluate_many
    from paretobench.models.loading import load_model
    from paretobench.registry import PRUNERS
    from paretobench.schedule import flops_fraction, single_step_for_budget

    t0 = time.time()
    loaded = load_model(args.model, device=args.device)
    model, processor = loaded.model, loaded.processor
    samples = load_dataset(args.data, limit=args.limit).samples
    shape = DecoderShape.from_config(model.config.text_config)
    n_text, n_visual = text_token_counts(adapter_for(model, processor), samples)
    n_text = round(n_text)

    fastv = PRUNERS.get("fastv")()
    schedules = budget_schedules(shape, n_text, n_visual, args.budget, args.schedules)
    schedules += sampled_schedules(shape, n_text, n_visual, args.budget, args.sampled)
    layer = next(i for i, k in enumerate(fastv.preset(shape.layers).keep) if k < 1)
    shared = single_step_for_budget(shape, layer, args.budget, n_text, n_visual)
    names = PRUNERS.names()
    pruners = {n: PRUNERS.get(n)() for n in names}
    preset_configs = {}
    for n, pr in pruners.items():
        if hasattr(pr, "fit"):
            preset_configs[n] = None  # fitted below on a calibration slice
        else:
            try:
                preset_configs[n] = presets.resolve(f"{n}-default", shape.layers)
            except ValueError:
                continue
    if "fitprune" in preset_configs:
        from paretobench.adapters import token_counts
        from paretobench.cli.eval import calibration_set
        from paretobench.engine import Engine

        adapter = adapter_for(model, processor)
        calib = calibration_set(args.data).samples  # the train split: apart from the evaluated questions
        calib = calib[:: max(1, len(calib) // 32)][:32]
        state = adapter.prepare(adapter.encode(calib), keys=[s.index for s in calib])
        texts, visuals = token_counts(adapter, samples)  # the evaluated inputs' own costs
        fitprune = pruners["fitprune"]
        preset_configs["fitprune"] = fitprune.fit(Engine(adapter), [state], fitprune.DEFAULT_BUDGET, texts.tolist(),
                                                  visuals.tolist())  # fmt: skip

    configs = [(None, None)]
    configs += [(s, fastv) for s in schedules]
    configs += [(shared, pruners[n]) for n in names]
    configs += [(s, pruners[n]) for n, s in preset_configs.items()]
    results = evaluate_many(model, processor, samples, configs, batch_size=args.batch_size, progress=not args.json)

    def row(schedule, pruner, r):
        return {
            "pruner": pruner.name if pruner else None,
            "schedule": str(schedule) if schedule else "all",
            "flops_fraction": r.llm_prefill_flops / r.unpruned_flops,
            "nominal_fraction": flops_fraction(shape, schedule, n_text, n_visual) if schedule else 1.0,
            "accuracy": r.scores["accuracy"],
            "per_category": r.scores["per_category"],
            "seconds": r.seconds,
        }

    rows = [row(s, p, r) for (s, p), r in zip(configs, results)]
    unpruned, rest = rows[0], rows[1:]
    landscape, rest = rest[: len(schedules)], rest[len(schedules) :]
    shared_rows, preset_rows = rest[: len(names)], rest[len(names) :]
    acc = {r["pruner"]: r["accuracy"] for r in shared_rows}
    margins = {n: {"vs_random": acc[n] - acc["random"], "vs_spatial": acc[n] - acc["spatial"]} for n in names}
    best = max(landscape, key=lambda r: r["accuracy"])
    worst = min(landscape, key=lambda r: r["accuracy"])
    out = {
        "model": loaded.name,
        "data": args.data,
        "n": len(samples),
        "budget": args.budget,
        "text_tokens": n_text,
        "visual_tokens": n_visual,
        "unpruned": unpruned,
        "fastv_landscape": {
            "schedules": landscape,
            "best": best,
            "worst": worst,
            "spread_points": 100 * (best["accuracy"] - worst["accuracy"]),
        },
        "shared_schedule": {"schedule": str(shared), "rows": shared_rows, "margins_points": {
            n: {k: 100 * v for k, v in m.items()} for n, m in margins.items()}},  # fmt: skip
        "presets": preset_rows,
        "device": str(model.device),
        "minutes": round((time.time() - t0) / 60, 1),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{loaded.name} on {args.data} ({len(samples)} questions), budget {args.budget:g}; unpruned "
          f"{100 * unpruned['accuracy']:.1f}%")  # fmt: skip
    print(f"\n1. FastV, {len(landscape)} schedules meeting the budget (accuracy %, FLOPs fraction):")
    for r in sorted(landscape, key=lambda r: -r["accuracy"]):
        print(f"   {100 * r['accuracy']:5.1f}  {r['flops_fraction']:.3f}  {r['schedule']}")
    print(f"   best - worst = {out['fastv_landscape']['spread_points']:.1f} points")
    print(f"\n2. every pruner under {shared} (FLOPs {shared_rows[0]['flops_fraction']:.3f}):")
    for r in shared_rows:
        m = margins[r["pruner"]]
        print(f"   {r['pruner']:<12} {100 * r['accuracy']:5.1f}   vs random {100 * m['vs_random']:+5.1f}   "
              f"vs spatial {100 * m['vs_spatial']:+5.1f}")  # fmt: skip
    print("\n3. presets:")
    for r in preset_rows:
        print(f"   {r['pruner']:<12} {100 * r['accuracy']:5.1f}  FLOPs {r['flops_fraction']:.3f}  {r['schedule']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
