"""One evaluation: the record of a schedule evaluated on one dataset (``Evaluation``), and the
content key it is stored and found again under (``evaluation_key``). The evaluator makes them,
the store keeps them, searchers learn from them."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field


@dataclass
class Evaluation:
    """One schedule evaluated on one dataset. ``accuracy`` is the mean of the per-category
    accuracies (the paper's "average over benchmarks"); ``overall`` pools every question."""

    key: str
    data: str  # dataset key (fingerprint + which samples)
    pruner: dict
    schedule: list[float]
    flops: float  # mean LLM prefill FLOPs per sample (decoder layers + score rows)
    unpruned_flops: float
    flops_fraction: float
    accuracy: float
    overall: float
    per_category: dict[str, float]
    correct: list[bool]
    live_visual: list[float]
    seconds: float
    created: float = field(default_factory=time.time)


def content_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def evaluation_key(*, model: str, data: str, pruner: dict, schedule, scoring: int, generation: dict) -> str:
    """The content key of an evaluation: the model's and the data's fingerprints, the pruner
    (name, algorithm version, parameters), the schedule, the scoring rules' version and the
    generation settings. Keep fractions are rounded to 1e-9 so that a schedule parsed from text
    and the same one computed keep one key."""
    keep = [round(float(k), 9) for k in schedule]
    return content_hash({"model": model, "data": data, "pruner": pruner, "schedule": keep, "scoring": scoring,
                         "generation": generation})  # fmt: skip
