"""``paretobench data synth``: write the synth8 benchmark."""

from __future__ import annotations

from paretobench.cli._output import add_json, emit

EXAMPLES = """examples:
  paretobench data synth --out data/synth8 --seed 0 --n 250
  paretobench data synth --out data/synth8-train --n 250 --n-train 8000   # with a train split
"""


def add_parser(sub, name):
    import argparse

    p = sub.add_parser(name, help="generate benchmark data", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    inner = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = inner.add_parser("synth", help="write synth8 as VLMEvalKit TSVs (one per family, plus a train split)",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="generator seed; same seed and sizes => identical files")
    s.add_argument("--n", type=int, default=250, help="test questions per family")
    s.add_argument("--n-train", type=int, default=0, help="training questions per family (0 = no train split)")
    s.add_argument("--native", action="store_true",
                   help="native resolution: each image at its own size, 64-256 pixels a side (16-256 tokens of 16x16)")
    add_json(s)
    s.set_defaults(run=run)


def run(args) -> int:
    from tqdm.auto import tqdm

    from paretobench.data import synth

    if args.n < 1 or args.n_train < 0:
        raise ValueError("--n must be >= 1 and --n-train >= 0")
    progress = None if args.json else (lambda it, **kw: tqdm(it, mininterval=1.0, **kw))
    manifest = synth.synth(args.out, seed=args.seed, n=args.n, n_train=args.n_train, native=args.native,
                           progress=progress)
    lines = [f"wrote {args.out}:"] + [f"  {f}  {n} rows" for f, n in manifest["files"].items()]
    emit(manifest, args.json, "\n".join(lines))
    return 0
