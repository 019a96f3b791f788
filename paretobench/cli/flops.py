"""``paretobench flops``: the decoder prefill FLOPs of a schedule, exact and by the paper's Eq. 2.

Reads only the model's config (no weights are loaded).
"""

from __future__ import annotations

import argparse

from paretobench.cli._output import add_json, emit
from paretobench.registry import DEFAULT_MODEL

EXAMPLES = """examples:
  paretobench flops --model tiny-llava --schedule 2:0.5 --json
  paretobench flops --model tiny-llava --preset vtw --text-tokens 40
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="prefill FLOPs of a pruning schedule (from the config alone)", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered model name or local model folder")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--schedule", help="keep fractions per layer, or layer:keep steps (default: keep all)")
    how.add_argument("--preset", help="a named schedule: <pruner>-default, vtw, vtw-K, aim")
    p.add_argument("--text-tokens", type=int, default=38, help="text tokens of the input (default 38, synth8's mean)")
    p.add_argument("--visual-tokens", type=int, default=None, help="visual tokens (default: from the vision config)")
    add_json(p)
    p.set_defaults(run=run)


def visual_tokens_from_config(config) -> int:
    v = config.vision_config
    if getattr(v, "image_size", None) and getattr(v, "patch_size", None):
        return (v.image_size // v.patch_size) ** 2
    raise ValueError("cannot tell the visual token count from this config; give --visual-tokens")


def run(args) -> int:
    from transformers import AutoConfig

    from paretobench import presets
    from paretobench.flops import DecoderShape, layer_flops, paper_eq2_flops
    from paretobench.models.loading import check_model_dir
    from paretobench.schedule import PruningSchedule, flops_fraction

    name, path = check_model_dir(args.model)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    shape = DecoderShape.from_config(config.text_config)
    if args.text_tokens < 0 or (args.visual_tokens is not None and args.visual_tokens < 1):
        raise ValueError("--text-tokens must be >= 0 and --visual-tokens >= 1")
    nv = args.visual_tokens or visual_tokens_from_config(config)
    nt = args.text_tokens
    if args.schedule:
        schedule = PruningSchedule.parse(args.schedule, shape.layers)
    elif args.preset:
        schedule = presets.resolve(args.preset, shape.layers)
    else:
        schedule = PruningSchedule.full(shape.layers)
    tokens = [nt + c for c in schedule.counts(nv)]
    per_layer = [layer_flops(shape, n) for n in tokens]
    full = layer_flops(shape, nt + nv) * shape.layers
    eq2 = paper_eq2_flops(shape.hidden, tokens)
    eq2_full = paper_eq2_flops(shape.hidden, [nt + nv] * shape.layers)
    result = {
        "model": name,
        "schedule": list(schedule.keep),
        "text_tokens": nt,
        "visual_tokens": nv,
        "visual_per_layer": schedule.counts(nv),
        "flops_per_layer": per_layer,
        "flops": sum(per_layer),
        "unpruned_flops": full,
        "fraction": flops_fraction(shape, schedule, nt, nv),
        "fraction_of_prunable_range": flops_fraction(shape, schedule, nt, nv, mode="prunable"),
        "paper_eq2": {"flops": eq2, "unpruned_flops": eq2_full, "fraction": eq2 / eq2_full},
    }
    text = "\n".join([
        f"{name}: {shape.layers} layers, {nt} text + {nv} visual tokens, schedule {schedule}",
        f"  visual per layer  {' '.join(map(str, result['visual_per_layer']))}",
        f"  prefill FLOPs     {result['flops']:.4g} of {full:.4g} = {result['fraction']:.3f} "
        f"({result['fraction_of_prunable_range']:.3f} of the prunable range)",
        f"  paper Eq. 2       {eq2:.4g} of {eq2_full:.4g} = {result['paper_eq2']['fraction']:.3f}",
    ])  # fmt: skip
    emit(result, args.json, text)
    return 0
