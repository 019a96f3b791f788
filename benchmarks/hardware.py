"""Time to first token, generation throughput and accuracy at one budget: unpruned, FastV, and
FastV under VisPCO's schedule (the paper's Table 4), on the machine it runs on.

Each question is answered alone (batch 1), as a served request would be:

- TTFT: from the processor's inputs to the first generated token: image encoding, the pruned
  prefill (FastV's score rows included) and the first token's logits.
- Throughput: generated tokens per second over a fixed number of new tokens (end of sequence
  ignored, so every method decodes the same count), encoding and prefill included.

Methods are interleaved question by question over several rounds; mean +- sd over all timings.
Accuracy is each method's on ``--limit`` questions per family. FastV's schedule is its default
layer sized to the budget; VisPCO's is the pick a stored ``vispco`` run made for the budget.

    python benchmarks/hardware.py --vispco results/search/vispco-fastv-bef1afe8 [--budget 0.5] [--json] [--out FILE]

``paretobench report table4`` turns the JSON files (``results/hardware-*.json``) into the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vispco", required=True, help="a vispco run folder (its pick for --budget is timed)")
    p.add_argument("--model", default=None, help="default: the run's model")
    p.add_argument("--data", default="synth8")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--questions", type=int, default=16, help="questions timed (spread over the families)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=16, help="tokens generated for the throughput")
    p.add_argument("--limit", type=int, default=64, help="questions per family for the accuracy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON here (e.g. results/hardware-tiny-llava.json)")
    args = p.parse_args(argv)

    import torch

    from paretobench.adapters import adapter_for
    from paretobench.cli.eval import budget_schedule
    from paretobench.cli.export import run_pick
    from paretobench.data.datasets import load_dataset
    from paretobench.engine import Engine
    from paretobench.measure import evaluate
    from paretobench.models.loading import device_name, load_model, synchronizer
    from paretobench.schedule import PruningSchedule
    from pruners.fastv import FastV

    if args.threads:
        torch.set_num_threads(args.threads)
    config, pick = run_pick(Path(args.vispco), args.budget)
    if config["pruner"] != "fastv":
        raise SystemExit(f"{args.vispco}: a {config['pruner']} run; Table 4 compares FastV schedules")
    loaded = load_model(args.model or config["model"], device=args.device)
    model, processor = loaded.model, loaded.processor
    data = load_dataset(args.data, limit=args.limit)
    methods = {
        "unpruned": None,
        "FastV": budget_schedule(args.budget, loaded, data, FastV()),
        "FastV + VisPCO": PruningSchedule(tuple(pick)),
    }
    by_family: dict[str, list] = {}
    for s in data.samples:
        by_family.setdefault(s.category, []).append(s)
    timed = [s for group in zip(*by_family.values()) for s in group][: args.questions]

    adapter = adapter_for(model, processor)
    engine = Engine(adapter)
    eos, pad = processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id
    sync = synchronizer(args.device)

    def answer(sample, schedule, new_tokens: int, stop: int) -> float:
        with torch.no_grad():
            sync()
            t0 = time.perf_counter()
            encoded = adapter.encode([sample])
            state = adapter.prepare(encoded, keys=[sample.index])
            engine.generate(state, schedule, FastV(), max_new_tokens=new_tokens, eos_id=stop, pad_id=pad)
            sync()
        return time.perf_counter() - t0

    for s in timed[:2]:  # warm-up
        for schedule in methods.values():
            answer(s, schedule, 2, -1)
    ttft = {m: [] for m in methods}
    rate = {m: [] for m in methods}
    for _ in range(args.rounds):
        for s in timed:
            for name, schedule in methods.items():
                ttft[name].append(answer(s, schedule, 1, eos))
                rate[name].append(args.new_tokens / answer(s, schedule, args.new_tokens, -1))  # -1: never stops

    rows = []
    for name, schedule in methods.items():
        result = evaluate(model, processor, data.samples, schedule=schedule, pruner=FastV() if schedule else None)
        rows.append({
            "method": name,
            "budget": 1.0 if schedule is None else args.budget,
            "schedule": str(schedule) if schedule else "all",
            "flops_fraction": result.llm_prefill_flops / result.unpruned_flops,
            "ttft_ms": 1000 * statistics.mean(ttft[name]),
            "ttft_ms_sd": 1000 * statistics.stdev(ttft[name]),
            "tokens_per_s": statistics.mean(rate[name]),
            "tokens_per_s_sd": statistics.stdev(rate[name]),
            "accuracy": result.scores["accuracy"],
        })  # fmt: skip
    out = {
        "model": loaded.name,
        "device": device_name(args.device),
        "threads": torch.get_num_threads(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "budget": args.budget,
        "vispco_run": Path(args.vispco).name,
        "questions_timed": len(timed),
        "rounds": args.rounds,
        "new_tokens": args.new_tokens,
        "accuracy_questions": len(data.samples),
        "rows": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['model']} on {out['device']} ({out['threads']} threads, {out['dtype']}), batch 1, "
              f"{len(timed)} questions x {args.rounds} rounds; accuracy on {len(data.samples)} questions")  # fmt: skip
        print(f"{'method':<16} {'FLOPs':>6} {'TTFT ms':>14} {'tokens/s':>14} {'accuracy':>9}")
        for r in rows:
            print(f"{r['method']:<16} {r['flops_fraction']:>6.3f} {r['ttft_ms']:>7.1f} ± {r['ttft_ms_sd']:<4.1f} "
                  f"{r['tokens_per_s']:>7.1f} ± {r['tokens_per_s_sd']:<4.1f} {100 * r['accuracy']:>8.1f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
