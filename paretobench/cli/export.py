"""``paretobench export-vlmeval``: a found schedule as a model VLMEvalKit's ``run.py`` can score.

Writes an export file (model, pruner, schedule; see ``paretobench.harnesses.vlmeval``) from a run's
pick for a budget, or from an explicit schedule or preset. Reads only configs and run files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paretobench.cli._output import add_json, emit

EXAMPLES = """examples:
  paretobench export-vlmeval --run runs/vispco-fastv-bef1afe8 --budget 0.5 --out fastv-vispco-50.json
  paretobench export-vlmeval --model /models/llava --pruner fastv --preset fastv-default --out fastv.json

then, on a machine with VLMEvalKit (a clone, installed with its torchvision):
  python -m paretobench.harnesses.vlmeval fastv-vispco-50.json --vlmeval-repo ~/VLMEvalKit \\
      --data MMBench_DEV_EN --judge exact_matching
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="export a schedule as a VLMEvalKit model", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", required=True, help="the export file (JSON) to write")
    p.add_argument("--run", dest="run_dir", help="a run folder: export its pick for --budget")
    p.add_argument("--budget", type=float, help="with --run: the budget whose pick is exported")
    p.add_argument("--model", help="registered model name or local model folder (default: the run's)")
    p.add_argument("--pruner", help="pruner (default: the run's; fastv for --schedule/--preset)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--schedule", help="keep fractions per layer, or layer:keep steps")
    how.add_argument("--preset", help="a named schedule: <pruner>-default, vtw, vtw-K, aim")
    p.add_argument("--max-new-tokens", type=int, default=16, help="answer length limit (default 16)")
    add_json(p)
    p.set_defaults(run=run)


def run_pick(folder: Path, budget: float) -> tuple[dict, list[float]]:
    """A run's config and its pick's schedule for ``budget``."""
    try:
        config = json.loads((folder / "config.json").read_text())
        picks = json.loads((folder / "summary.json").read_text())["picks"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{folder}: not a finished paretobench run ({e})") from None
    found = {float(b): p for b, p in picks.items()}
    if budget not in found:
        raise ValueError(f"{folder}: no pick for budget {budget}; it has {sorted(found)}")
    return config, found[budget]["schedule"]


def run(args) -> int:
    from paretobench import presets
    from paretobench.cli.eval import decoder_layers
    from paretobench.models.loading import check_model_dir
    from paretobench.registry import MODELS, PRUNERS
    from paretobench.schedule import PruningSchedule

    if args.run_dir:
        if args.budget is None or args.schedule or args.preset:
            raise ValueError("--run takes --budget (and no --schedule or --preset)")
        config, keep = run_pick(Path(args.run_dir), args.budget)
        model, pruner, params = args.model or config["model"], args.pruner or config["pruner"], config.get("pruner_params", {})
    else:
        if args.budget is not None:
            raise ValueError("--budget needs --run (the pick of a run for that budget)")
        if not args.model:
            raise ValueError("give --model (or --run)")
        model, pruner, params = args.model, args.pruner or "fastv", {}
        keep = None
    _, path = check_model_dir(model)
    layers = decoder_layers(path)
    PRUNERS.get(pruner)  # did-you-mean on a wrong name
    if keep is not None:
        schedule = PruningSchedule(tuple(keep))
        if len(schedule.keep) != layers:
            raise ValueError(f"the run's schedule has {len(schedule.keep)} layers; {model} has {layers}")
    elif args.schedule:
        schedule = PruningSchedule.parse(args.schedule, layers)
    elif args.preset:
        schedule = presets.resolve(args.preset, layers)
    else:
        schedule = None
    # a registered name stays a name (the package ships it); a folder is kept as an absolute path
    export = {
        "version": 1,
        "model": model if model in MODELS else str(path.resolve()),
        "pruner": pruner,
        "params": params,
        "schedule": ",".join(f"{k:.6g}" for k in schedule.keep) if schedule else None,
        "max_new_tokens": args.max_new_tokens,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(export, indent=2) + "\n")
    emit({**export, "out": str(out)}, args.json,
         f"wrote {out}: {export['model']}, {pruner}, schedule {export['schedule'] or 'keep all'}")
    return 0
