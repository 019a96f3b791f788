"""``paretobench train-embedded``: train an embedded model (tiny-llava, or tiny-qwen2.5-vl) from scratch."""

from __future__ import annotations

import argparse
import dataclasses

from paretobench.cli._output import add_json, emit

EXAMPLES = """examples:
  paretobench data synth --out data/synth8-train --n 250 --n-train 8000
  paretobench train-embedded --data data/synth8-train --out data/tiny-llava
  paretobench model-card --model data/tiny-llava          # ablations + model card
  paretobench train-embedded --data data/synth8-train --out /tmp/t --vision-steps 5 --steps 5 --val-size 16
  paretobench data synth --native --out data/synth8-native --n 250 --n-train 8000
  paretobench train-embedded --arch qwen2.5-vl --data data/synth8-native --out data/tiny-qwen2.5-vl \
      --checkpoint checkpoints/tiny-qwen2.5-vl         # the state every 250 steps, for --resume
  paretobench train-embedded --resume checkpoints/tiny-qwen2.5-vl
"""


def add_parser(sub, name):
    from paretobench.training.config import TrainingConfig

    p = sub.add_parser(name, help="train an embedded model from random init on synth8's train split",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for f in dataclasses.fields(TrainingConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.default is dataclasses.MISSING:  # required, unless --resume reads it from the checkpoint
            p.add_argument(flag, type=str, default=None)
        elif isinstance(f.default, bool) or str(f.type).startswith("bool"):  # bool | None: absent = None
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=f"(default: {f.default})")
    p.add_argument("--resume", metavar="DIR", default="",
                   help="continue the run whose --checkpoint folder is DIR, with its settings (other flags are ignored)")
    p.add_argument("--card", action=argparse.BooleanOptionalAction, default=True,
                   help="after training, run the ablations and write the model card")  # fmt: skip
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.training.config import TrainingConfig
    from paretobench.training.train import resume, train_embedded

    log = (lambda m: None) if args.json else print
    if args.resume:
        record = resume(args.resume, log=log)
        cfg = TrainingConfig(**record["config"])
    else:
        missing = [f"--{f.name}" for f in dataclasses.fields(TrainingConfig)
                   if f.default is dataclasses.MISSING and getattr(args, f.name) is None]  # fmt: skip
        if missing:
            raise ValueError(f"train-embedded needs {' and '.join(missing)} (or --resume DIR)")
        cfg = TrainingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig)})
        record = train_embedded(cfg, log=log)
    if args.card:
        from paretobench.training.card import write_card

        record["card"] = write_card(cfg.out, progress=not args.json)
    last = record["history"][-1] if record["history"] else {}
    emit(record, args.json, f"saved {cfg.out}; held-out answer accuracy {last.get('mean', float('nan')):.3f}")
    return 0
