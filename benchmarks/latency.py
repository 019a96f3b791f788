"""Prefill latency of the pruned engine against the FLOPs it saves, on the embedded model.

For each budget (a fraction of unpruned decoder prefill FLOPs) the schedule is FastV's single
step at the latest layer (up to FastV's default K=2) where one step can meet the budget. Every
configuration is timed on the same batch, interleaved over several rounds, and the median is
kept (the machine is noisy; ratios from one run are what count):

    efficiency = (unpruned time / pruned time) / (unpruned FLOPs / pruned FLOPs)

1.0 means time falls exactly as FLOPs do. The unpruned time is the model's own forward
(``model(inputs_embeds=...)``); the engine's keep-all time is printed next to it, so the
engine's own overhead shows. Image encoding is excluded (it is computed once per image and
shared by every schedule).

With ``--decoder-shape`` (e.g. ``qwen2.5-vl-3b``) the model's decoder is replaced by a random
one of that checkpoint's shape (``paretobench.models.checkpoint_shapes``): the timings are that size's,
the outputs meaningless. On a GPU give ``--device cuda --dtype bfloat16``; every timed call
ends with a device synchronise.

    python benchmarks/latency.py [--model tiny-llava] [--batch-size 32] [--rounds 15] [--json]
                                 [--device cuda] [--dtype bfloat16] [--decoder-shape qwen2.5-vl-3b]
                                 [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from paretobench.models.loading import DTYPES
from paretobench.registry import DEFAULT_MODEL


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", default="synth8")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--budgets", default="0.9,0.7,0.5,0.3,0.1")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--decoder-shape", default=None, help="time a random decoder of this checkpoint's shape")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize every image to N x N first (native-resolution models: N/16 squared tokens)")  # fmt: skip
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    from paretobench.adapters import adapter_for
    from paretobench.data.datasets import load_dataset
    from paretobench.engine import Engine
    from paretobench.flops import DecoderShape, prefill_flops
    from paretobench.models.loading import device_name, load_model, synchronizer, torch_dtype
    from paretobench.schedule import ScheduleError, single_step_for_budget
    from pruners.fastv import FastV

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch_dtype(args.dtype)
    loaded = load_model(args.model, dtype=dtype, device=args.device)
    if args.decoder_shape:
        from paretobench.models.checkpoint_shapes import with_decoder_shape

        loaded = with_decoder_shape(loaded, args.decoder_shape, dtype=dtype, device=args.device)
    model = loaded.model
    sync = synchronizer(args.device)
    samples = load_dataset(args.data, limit=args.batch_size).samples
    # one batch of a single family: equal prompt lengths, no padding
    family = samples[0].category
    samples = [s for s in samples if s.category == family][: args.batch_size]
    adapter = adapter_for(model, loaded.processor)
    engine = Engine(adapter)
    size = args.image_size
    encoded = adapter.encode(samples, (lambda s: s.image().resize((size, size))) if size else None)
    inputs, feats = encoded.inputs, encoded.feats
    state = adapter.prepare(encoded, keys=[s.index for s in samples])
    shape = DecoderShape.from_config(model.config.text_config)
    n_visual = state.n_visual[0]
    n_text = int(state.valid[0].sum()) - n_visual
    full_flops = prefill_flops(shape, [n_text + n_visual] * shape.layers)

    configs = {"unpruned (model forward)": None, "unpruned (engine)": "keep-all"}
    schedules = {}
    for b in (float(x) for x in args.budgets.split(",")):
        schedule = None
        for layer in (2, 1, 0):
            try:
                schedule = single_step_for_budget(shape, layer, b, n_text, n_visual)
                break
            except ScheduleError:
                continue
        schedules[b] = schedule
        if schedule is not None:
            configs[f"budget {b:g}"] = schedule

    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with torch.no_grad():
        embeds = embeds.masked_scatter((inputs["input_ids"] == model.config.image_token_id)[..., None],
                                       torch.cat(feats).to(embeds.dtype))  # fmt: skip

    def run(config):
        with torch.no_grad():
            if config is None:
                model.model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
                return None
            result = engine.prefill(state, None if config == "keep-all" else config, FastV())
            return result

    flops = {}
    for name, config in configs.items():  # warm-up, and the FLOPs each configuration executes
        r = run(config)
        flops[name] = full_flops if r is None else prefill_flops(shape, [t[0] for t in r.tokens]) + r.score_flops[0]
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, config in configs.items():
            t0 = time.perf_counter()
            run(config)
            sync()
            times[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = median["unpruned (model forward)"]
    rows = []
    for name in configs:
        speedup = base / median[name]
        reduction = full_flops / flops[name]
        rows.append({
            "config": name,
            "schedule": str(configs[name]) if configs[name] not in (None, "keep-all") else "all",
            "flops_fraction": flops[name] / full_flops,
            "median_ms": 1000 * median[name],
            "speedup": speedup,
            "efficiency": speedup / reduction,
        })  # fmt: skip
    unreachable = [b for b, s in schedules.items() if s is None]
    out = {
        "model": loaded.name,
        "batch_size": len(samples),
        "text_tokens": n_text,
        "visual_tokens": n_visual,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "device": device_name(args.device),
        "dtype": args.dtype,
        "decoder_shape": args.decoder_shape,
        "rows": rows,
        "unreachable_budgets": unreachable,
        "text_only_floor": prefill_flops(shape, [n_text] * shape.layers) / full_flops,
        "command": "python benchmarks/latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{loaded.name}: batch {len(samples)}, {n_text} text + {n_visual} visual tokens, "
              f"{args.rounds} rounds, {out['device']} {args.dtype}, {out['threads']} threads (medians)")  # fmt: skip
        print(f"{'config':<26} {'schedule':<34} {'FLOPs':>6} {'ms':>8} {'speedup':>8} {'efficiency':>10}")
        for r in rows:
            print(f"{r['config']:<26} {r['schedule']:<34} {r['flops_fraction']:>6.3f} {r['median_ms']:>8.2f} "
                  f"{r['speedup']:>8.2f} {r['efficiency']:>10.2f}")  # fmt: skip
        for b in unreachable:
            print(f"budget {b:g}: below the text-only floor {out['text_only_floor']:.3f} of this input; not run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
