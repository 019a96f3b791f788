"""``paretobench eval``: accuracy, FLOPs and time of a model on a benchmark, unpruned or pruned."""

from __future__ import annotations

import argparse

from paretobench.cli._output import add_device_args, add_generation_args, add_json, emit
from paretobench.registry import DEFAULT_MODEL

EXAMPLES = """examples:
  paretobench eval --model tiny-llava --data synth8 --json
  paretobench eval --pruner fastv --preset fastv-default
  paretobench eval --pruner fastv --budget 0.5 --limit 50
  paretobench eval --pruner fitprune --budget 0.5 --calibration /data/calib.tsv
  paretobench eval --pruner random --schedule 2:0.5,6:0.2
  paretobench eval --model /models/my-llava --data /data/LMUData/MMBench_DEV_EN.tsv
schedules: one keep fraction per decoder layer ("1,1,0.5,...") or layer:keep steps ("2:0.5,6:0.2")
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="evaluate a model, unpruned or pruned, on a benchmark", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered model name or local model folder")
    p.add_argument("--data", default="synth8", help="registered dataset, a VLMEvalKit .tsv file, or a folder of them")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    p.add_argument("--pruner", default=None, help="how tokens are chosen (default fastv when a schedule drops any)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--schedule", help="keep fractions per layer, or layer:keep steps")
    how.add_argument("--preset", help="a named schedule: <pruner>-default, vtw, vtw-K, aim")
    how.add_argument("--budget", type=float, help="fraction of unpruned LLM prefill FLOPs (scoring included), "
                                                  "never exceeded: one step at the layer where the pruner's "
                                                  "preset starts (FastV's for pruners with none), or a fitted "
                                                  "pruner's recipe")  # fmt: skip
    p.add_argument("--calibration", help="questions a fitted pruner (fitprune) fits its recipe on: a registered "
                                         "dataset, .tsv file or folder (default: --data's train split)")  # fmt: skip
    add_generation_args(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    add_device_args(p)
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.data.datasets import load_dataset
    from paretobench.models.loading import check_model_dir, load_model, torch_dtype
    from paretobench.registry import PRUNERS, build_pruner, parse_params

    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    pruner_name = args.pruner or ("fastv" if (args.schedule or args.preset or args.budget is not None) else None)
    params = parse_params(args.pruner_param)
    if params and not pruner_name:
        raise ValueError("--pruner-param needs a pruner (--pruner)")
    budget = args.budget
    if args.preset and args.preset.endswith("-default") and hasattr(PRUNERS.get(args.preset[:-8]), "fit"):
        # a fitted method's default is its recipe for its default budget
        pruner_name, budget = args.preset[:-8], PRUNERS.get(args.preset[:-8]).DEFAULT_BUDGET
    # unknown names and parameters fail before anything loads
    pruner = build_pruner(pruner_name, params) if pruner_name else None
    if budget is not None and getattr(pruner, "chooses_counts", False):
        raise ValueError(f"{pruner_name} with {pruner.params()} chooses its own token counts, so no schedule "
                         "can promise a budget: give --preset or --schedule")
    _, path = check_model_dir(args.model)
    if budget is not None:
        schedule = None
    else:
        schedule = resolve_schedule(args, layers=decoder_layers(path), pruner=pruner)  # bad input fails before anything loads
    dataset = load_dataset(args.data, limit=args.limit)
    loaded = load_model(args.model, device=args.device, dtype=torch_dtype(args.dtype))
    if budget is not None:
        fitted = hasattr(pruner, "fit")
        calibration = calibration_set(args.data, args.calibration, dataset).samples if fitted else None
        schedule = budget_schedule(budget, loaded, dataset, pruner, calibration)
    result = evaluate_to_dict(loaded, dataset, batch_size=args.batch_size, threads=args.threads,
                              progress=not args.json, schedule=schedule, pruner=pruner,
                              max_new_tokens=args.max_new_tokens)  # fmt: skip
    lines = [
        f"{result['model']} on {result['data']} ({result['n']} questions)"
        + (f", {result['pruner']['name']} pruning, schedule {result['schedule_text']}" if result["schedule"] else ""),
        f"  accuracy          {result['accuracy']:.4f}",
        *(f"  {c:<17} {a:.4f}" for c, a in result["per_category"].items()),
        f"  LLM prefill FLOPs {result['flops']['llm_prefill']:.4g} per sample, {result['flops']['fraction']:.3f} of "
        f"unpruned ({result['tokens']['visual']:.0f} visual + {result['tokens']['text']:.1f} text tokens)",
        f"  live visual/layer {' '.join(f'{v:.0f}' for v in result['tokens']['live_visual_per_layer'])}",
        f"  time              {result['seconds']:.1f} s ({1000 * result['seconds_per_sample']:.1f} ms/sample)",
    ]
    emit(result, args.json, "\n".join(lines))
    return 0


def decoder_layers(path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    return getattr(config, "text_config", config).num_hidden_layers


def resolve_schedule(args, layers: int, pruner=None):
    """The schedule ``--schedule`` or ``--preset`` asks for (None otherwise), checked against
    the model's depth; ``<pruner>-default`` of the pruner given is its preset with its parameters."""
    from paretobench import presets
    from paretobench.schedule import PruningSchedule

    if args.schedule:
        return PruningSchedule.parse(args.schedule, layers)
    if args.preset:
        if pruner is not None and args.preset == f"{pruner.name}-default":
            return pruner.preset(layers)
        return presets.resolve(args.preset, layers)
    return None


def calibration_set(data: str, calibration: str | None = None, evaluated=None):
    """The questions a fitted pruner fits its recipe on, apart from the evaluated ones:
    ``calibration`` (any ``--data`` form) if given, else ``data``'s train split (the registered
    ``<name>-train``, or the ``*_train.tsv`` file in a folder). ``evaluated``: the evaluated
    dataset, which the calibration set must not be."""
    from pathlib import Path

    from paretobench.data.datasets import load_dataset
    from paretobench.registry import DATASETS
    from paretobench.schedule import ScheduleError

    if calibration is None and f"{data}-train" in DATASETS:
        calibration = f"{data}-train"
    elif calibration is None and Path(data).is_dir() and any(Path(data).glob("*_train.tsv")):
        calibration = str(sorted(Path(data).glob("*_train.tsv"))[0])
    elif calibration is None:
        raise ScheduleError(f"{data} has no train split to fit the recipe on: give --calibration FILE")
    found = load_dataset(calibration)
    shared = evaluated is not None and {f.resolve() for f in found.files} & {f.resolve() for f in evaluated.files}
    if shared or (evaluated is not None and found.fingerprint == evaluated.fingerprint):
        raise ScheduleError(f"the calibration set {calibration} holds evaluated questions: fit on other ones")
    return found


def budget_schedule(budget: float, loaded, dataset, pruner, calibration=None, size: int = 32):
    """The schedule for ``budget``: a fitted pruner's own recipe, fitted on ``size`` questions
    spread over ``calibration`` (samples apart from the evaluated ones, see ``calibration_set``);
    else one step at the layer where the pruner's preset starts (FastV's layer, 2, for a pruner
    with no preset), or the latest earlier layer where one step reaches the budget, keeping as
    many tokens as the budget allows. Either way the cost, scoring included, is that of every
    evaluated input (their own token counts), so the realised FLOPs never exceed ``budget``."""
    from paretobench.adapters import adapter_for, token_counts
    from paretobench.flops import DecoderShape
    from paretobench.schedule import FREE, PruningSchedule, ScheduleError, check_budget, dataset_fraction

    layers = loaded.model.config.text_config.num_hidden_layers
    adapter = adapter_for(loaded.model, loaded.processor)
    texts, visuals = (t.tolist() for t in token_counts(adapter, dataset.samples))
    shape = DecoderShape.from_config(loaded.model.config.text_config)
    check_budget(budget, shape, round(sum(texts) / len(texts)), round(sum(visuals) / len(visuals)))
    if hasattr(pruner, "fit"):
        from paretobench.engine import Engine

        if not calibration:
            raise ScheduleError(f"{pruner.name} fits its recipe on calibration questions apart from the "
                                "evaluated ones: give them (--calibration)")  # fmt: skip
        calib = calibration[:: max(1, len(calibration) // size)][:size]
        state = adapter.prepare(adapter.encode(calib), keys=[s.index for s in calib])
        return pruner.fit(Engine(adapter), [state], budget, texts, visuals)
    try:
        preset = pruner.preset(layers) if pruner is not None else None
    except ScheduleError:  # no published schedule: prune where FastV does
        preset = None
    layer = next((i for i, k in enumerate(preset.keep) if k < 1), 0) if preset else min(2, layers - 1)
    score = pruner.score_cost() if pruner is not None else FREE  # the budget covers what scoring costs too
    nv = max(visuals)

    def at(start, count):
        return PruningSchedule.steps(layers, {start: count / nv})

    def fits(start, count):
        return dataset_fraction(shape, at(start, count), texts, visuals, score) <= budget + 1e-12

    for start in range(layer, -1, -1):  # the preset's layer, else the latest earlier one that reaches it
        if not fits(start, 0):
            continue
        lo, hi = 0, nv  # the most tokens kept within the budget: the cost grows with the count
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(start, mid) else (lo, mid - 1)
        return at(start, lo)
    raise ScheduleError(f"budget {budget:g} is out of reach: even dropping every visual token before layer 0 "
                        "costs more")  # fmt: skip


def evaluate_to_dict(loaded, dataset, *, batch_size=32, threads=0, progress=False, schedule=None, pruner=None,
                     **kw) -> dict:  # fmt: skip
    import torch

    from paretobench.measure import evaluate

    if threads:
        torch.set_num_threads(threads)
    r = evaluate(loaded.model, loaded.processor, dataset.samples, batch_size=batch_size, progress=progress,
                 schedule=schedule, pruner=pruner, **kw)  # fmt: skip
    return {
        "model": loaded.name,
        "model_path": str(loaded.path),
        "device": str(loaded.model.device),
        "dtype": str(loaded.model.dtype).removeprefix("torch."),
        "data": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "pruner": pruner.config() if pruner else None,
        "schedule": list(schedule.keep) if schedule else None,
        "schedule_text": str(schedule) if schedule else None,
        "n": r.scores["n"],
        "accuracy": r.scores["accuracy"],
        "mean_of_categories": r.scores["mean_of_categories"],
        "per_category": r.scores["per_category"],
        "n_per_category": r.scores["n_per_category"],
        "flops": {
            "llm_prefill": r.llm_prefill_flops,
            "unpruned": r.unpruned_flops,
            "fraction": r.llm_prefill_flops / r.unpruned_flops if r.unpruned_flops else 1.0,
        },
        "tokens": {
            "visual": r.visual_tokens,
            "visual_kept": r.kept_visual_tokens,
            "text": r.text_tokens,
            "live_visual_per_layer": r.live_visual,
        },
        "seconds": r.seconds,
        "seconds_per_sample": r.seconds / max(1, r.scores["n"]),
    }
