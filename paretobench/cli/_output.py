"""Printing results: ``--json`` prints one JSON document on stdout, otherwise a short table."""

from __future__ import annotations

import json
import math


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit(result: dict, as_json: bool, text: str) -> None:
    print(json.dumps(_clean(result), indent=2) if as_json else text)


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_device_args(parser) -> None:
    """``--device`` and ``--dtype``: where the model runs and in which precision."""
    from paretobench.models.loading import DTYPES  # torch-free

    parser.add_argument("--device", default="auto",
                        help="auto (a CUDA GPU if torch sees one, else the CPU), cpu, cuda, cuda:1, ...")  # fmt: skip
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="model precision (default float32; bfloat16 on GPUs; part of a stored result's key)")  # fmt: skip


def add_generation_args(parser) -> None:
    """``--pruner-param`` and ``--max-new-tokens``: what, besides the schedule, changes an answer."""
    parser.add_argument("--pruner-param", action="append", default=[], metavar="KEY=VALUE",
                        help="a pruner's constructor argument, e.g. positions=keep or recycle=0 (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="the greedy answer's length limit (default: 16 on multiple-choice data, 64 on "
                             "open questions); part of every stored result's key")
