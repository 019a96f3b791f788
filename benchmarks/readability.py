"""What a model's image tokens carry: the card's linear probes (``patch_readability``) on chosen
families of a benchmark, for one or more model folders (a finished model or a stage-1 tower).

Each label is probed on the patches that show it (a character's identity on character patches),
fitted on half of them and scored on the other half. On the reading families this says whether
the decoder is given characters it could read at all.

    python benchmarks/readability.py MODEL [MODEL ...] [--data synth8-native] [--families char word]
                                     [--steps 300] [--json]
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="registered names or model folders")
    p.add_argument("--data", default="synth8-native")
    p.add_argument("--families", nargs="+", default=["char", "word"])
    p.add_argument("--steps", type=int, default=300, help="Adam steps of each probe")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from paretobench.data.datasets import load_dataset
    from paretobench.models.loading import load_model
    from paretobench.training.card import patch_readability

    samples = [s for s in load_dataset(args.data).samples if s.category in args.families]
    if not samples:
        p.error(f"{args.data} has no questions of the families {args.families}")
    out = {}
    for name in args.models:
        loaded = load_model(name, device="cpu")
        out[name] = patch_readability(loaded.model, samples, steps=args.steps, processor=loaded.processor)
        if not args.json:
            for where, acc in out[name].items():
                print(f"{name} [{where}]: " + ", ".join(f"{k} {100 * a:.1f}%" for k, a in acc.items()))
    if args.json:
        print(json.dumps({"data": args.data, "families": args.families, "samples": len(samples), "read": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
