"""``paretobench eval``: accuracy and prefill FLOPs of a model on a benchmark."""

from __future__ import annotations

import argparse

from paretobench.cli._output import add_json, emit

EXAMPLES = """examples:
  paretobench eval --model tiny-llava --data synth8 --json
  paretobench eval --model tiny-llava --data data/synth8-seed1 --limit 50
  paretobench eval --model /models/my-llava --data /data/LMUData/MMBench_DEV_EN.tsv
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="evaluate a model (unpruned) on a benchmark", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default="tiny-llava", help="registered model name or local model folder")
    p.add_argument("--data", default="synth8", help="registered dataset, a VLMEvalKit .tsv file, or a folder of them")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.data.datasets import load_dataset
    from paretobench.models.loading import check_model_dir, load_model

    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    check_model_dir(args.model)
    dataset = load_dataset(args.data, limit=args.limit)  # validated before the model loads
    loaded = load_model(args.model)
    result = evaluate_to_dict(loaded, dataset, batch_size=args.batch_size, threads=args.threads,
                              progress=not args.json)  # fmt: skip
    lines = [
        f"{result['model']} on {result['data']} ({result['n']} questions)",
        f"  accuracy          {result['accuracy']:.4f}",
        *(f"  {c:<17} {a:.4f}" for c, a in result["per_category"].items()),
        f"  LLM prefill FLOPs {result['flops']['llm_prefill']:.4g} per sample "
        f"({result['tokens']['visual']:.0f} visual + {result['tokens']['text']:.1f} text tokens)",
        f"  time              {result['seconds']:.1f} s",
    ]
    emit(result, args.json, "\n".join(lines))
    return 0


def evaluate_to_dict(loaded, dataset, *, batch_size=32, threads=0, progress=False, **kw) -> dict:
    import torch

    from paretobench.evaluate import evaluate

    if threads:
        torch.set_num_threads(threads)
    r = evaluate(loaded.model, loaded.processor, dataset.samples, batch_size=batch_size, progress=progress, **kw)
    return {
        "model": loaded.name,
        "model_path": str(loaded.path),
        "data": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "n": r.scores["n"],
        "accuracy": r.scores["accuracy"],
        "mean_of_categories": r.scores["mean_of_categories"],
        "per_category": r.scores["per_category"],
        "n_per_category": r.scores["n_per_category"],
        "flops": {"llm_prefill": r.llm_prefill_flops},
        "tokens": {"visual": r.visual_tokens, "visual_kept": r.kept_visual_tokens, "text": r.text_tokens},
        "seconds": r.seconds,
    }
