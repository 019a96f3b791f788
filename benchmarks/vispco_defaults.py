"""VisPCO's configurations compared on training questions only: which default to keep.

The train split (``synth8-train``, 1,024 questions, the families interleaved) is cut in two: the
first ``--train`` questions train each configuration's predictor (its own checkpoint selection
holds out the last 64 of them), the rest score the configuration's picks at each budget. No test
question is read, so whatever wins here can be the default without being tuned on the test set.

    python benchmarks/vispco_defaults.py [--model tiny-llava] [--pruner fastv] [--train 768]
                                         [--budgets 0.3 0.5 0.7] [--out results/vispco-defaults.json]

Prints one line per configuration: the picks' accuracy (mean over families) and realised FLOPs
at each budget, their mean accuracy, and the training time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

# name -> the searcher's settings (``--param``s)
CONFIGS = {
    "ours (ledge)": {},
    "ours, multistep kernel": {"kernel": "multistep"},
    "ours, psigmoid kernel": {"kernel": "psigmoid"},
    "ours, KL original||pruned": {"kl": "original-pruned"},
    "ours, w(1) by KKT balance": {"w_init": "kkt"},
    "paper": {"preset": "paper"},
}
TRAIN_SPLITS = {"synth8": "synth8-train", "synth8-native": "synth8-native-train"}


def held_out_file(train: str, first: int, folder: Path) -> Path:
    """The train split's questions after the first ``first``, as a VLMEvalKit TSV of their own."""
    from paretobench.data.datasets import load_dataset

    files = load_dataset(train).files
    lines = files[0].read_text().splitlines(keepends=True)
    if len(lines) - 1 <= first:
        raise ValueError(f"{files[0]} has {len(lines) - 1} questions; --train {first} leaves none to score on")
    out = folder / f"{train}_heldout.tsv"
    out.write_text(lines[0] + "".join(lines[1 + first :]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llava")
    p.add_argument("--data", default="synth8", choices=sorted(TRAIN_SPLITS), help="whose train split to use")
    p.add_argument("--pruner", default="fastv")
    p.add_argument("--train", type=int, default=768, help="train-split questions the predictors train on")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--only", nargs="*", default=None, help="configurations to run (default: all)")
    p.add_argument("--out", default="results/vispco-defaults.json")
    p.add_argument("--work", default=None, help="results folder for the runs (default: a temporary one)")
    args = p.parse_args(argv)

    from paretobench.run_loop import RunConfig, run

    train = TRAIN_SPLITS[args.data]
    names = args.only or list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        heldout = held_out_file(train, args.train, work)
        rows = []
        for name in names:
            params = {**CONFIGS[name], "train": train, "train_limit": args.train}
            cfg = RunConfig(searcher="vispco", pruner=args.pruner, model=args.model, data=(str(heldout),),
                            budgets=tuple(args.budgets), n=40, params=params, out=str(work / "runs"))  # fmt: skip
            outcome = run(cfg, progress=False)
            summary = json.loads((outcome.folder / "summary.json").read_text())
            training = summary["searcher_report"]["training"] or {}
            picks = {b: (None if v is None else {"accuracy": v["accuracy"], "flops": v["flops_fraction"]})
                     for b, v in summary["picks"].items()}  # fmt: skip
            met = [v["accuracy"] for v in picks.values() if v is not None]
            rows.append({"config": name, "params": CONFIGS[name], "picks": picks,
                         "mean_accuracy": sum(met) / len(met) if len(met) == len(picks) else None,
                         "training_seconds": training.get("seconds"),
                         "kept_step": training.get("kept_step")})  # 0: the untrained predictor's picks won  # fmt: skip
            cells = ["-" if v is None else f"{v['accuracy']:.4f} @ {v['flops']:.3f}" for v in picks.values()]
            mean, seconds = rows[-1]["mean_accuracy"], rows[-1]["training_seconds"] or 0
            print(f"{name:<28} " + "  ".join(f"{b}: {c}" for b, c in zip(picks, cells))
                  + f"  mean {float('nan') if mean is None else mean:.4f}  trained {seconds:.0f} s"
                  + f", kept step {rows[-1]['kept_step']}", flush=True)  # fmt: skip
    record = {"model": args.model, "pruner": args.pruner, "train_split": train, "trained_on": args.train,
              "scored_on": "the rest of the train split", "budgets": args.budgets, "rows": rows,
              "command": "python benchmarks/vispco_defaults.py "
              + " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
