"""Measure a VLM on VLMEvalKit-format samples: greedy answers, exact-match scoring, FLOPs, time.

Everything runs through the pruned-inference engine (``paretobench.engine``): unpruned by
default, or under a schedule with a pruner choosing the tokens. ``select`` is a separate hook
for probes that change the visual tokens before the language model per sample (all of them, a
subset at their original positions, or replacements): the model card's ablations use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from paretobench.adapters import VisualSelect, adapter_for, chat_prompts  # noqa: F401  (re-exported)
from paretobench.data.tsv import Sample
from paretobench.engine import Engine
from paretobench.flops import DecoderShape, prefill_flops
from paretobench.schedule import PruningSchedule
from paretobench.scoring import accuracy, is_correct


@dataclass
class EvalResult:
    predictions: list[str]
    correct: list[bool]
    scores: dict  # accuracy, mean_of_categories, per_category, n, n_per_category
    visual_tokens: float  # mean visual tokens per sample before selection
    kept_visual_tokens: float  # mean visual tokens fed to the language model
    text_tokens: float
    live_visual: list[float]  # mean live visual tokens at each decoder layer's input
    llm_prefill_flops: float  # mean per sample: decoder layers + pruners' score rows
    unpruned_flops: float  # mean per sample: decoder layers with every token, for the budget fraction
    seconds: float


# generated tokens when none are given: room for a short reply around an option letter ("The
# answer is C.") on multiple-choice data, for a phrase on open questions
MAX_NEW_TOKENS = {"mcq": 16, "vqa": 64}


def default_max_new_tokens(samples: list[Sample]) -> int:
    """The generation length that fits the data: ``MAX_NEW_TOKENS["mcq"]`` when every question
    is multiple choice, else ``MAX_NEW_TOKENS["vqa"]``."""
    return MAX_NEW_TOKENS["mcq" if all(s.is_mcq for s in samples) else "vqa"]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def evaluate(
    model,
    processor,
    samples: list[Sample],
    *,
    batch_size: int = 32,
    schedule: PruningSchedule | None = None,
    pruner=None,
    select: VisualSelect | None = None,
    image_fn: Callable[[Sample], object] | None = None,
    max_new_tokens: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Answer every sample greedily (pruned as ``schedule`` and ``pruner`` say) and score it."""
    return evaluate_many(model, processor, samples, [(schedule, pruner)], batch_size=batch_size, select=select,
                         image_fn=image_fn, max_new_tokens=max_new_tokens, progress=progress)[0]  # fmt: skip


def evaluate_many(
    model,
    processor,
    samples: list[Sample],
    configs: list[tuple[PruningSchedule | None, object]],
    *,
    batch_size: int = 32,
    select: VisualSelect | None = None,
    image_fn: Callable[[Sample], object] | None = None,
    max_new_tokens: int | None = None,
    progress: bool = False,
) -> list[EvalResult]:
    """``evaluate`` for several (schedule, pruner) configurations; each batch of images is
    encoded once and shared by all of them. ``seconds`` of each result covers its own prefill
    and decoding (the shared encoding is not counted). ``max_new_tokens``: the greedy answer's
    length limit (default: ``default_max_new_tokens``; decoding stops earlier at end of sequence)."""
    tok = processor.tokenizer
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(samples)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} must be at least 1")
    adapter = adapter_for(model, processor)
    engine = Engine(adapter)
    shape = DecoderShape.from_config(model.config.text_config)
    vision = any(getattr(p, "needs_vision", False) for _, p in configs)
    acc = [{"pred": [], "nv": [], "kept": [], "nt": [], "flops": [], "full": [], "live": [], "sec": 0.0}
           for _ in configs]  # fmt: skip
    batches = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", mininterval=2.0)
    for i in batches:
        chunk = samples[i : i + batch_size]
        encoded = adapter.encode(chunk, image_fn, vision_extras=vision)
        state = adapter.prepare(encoded, samples=chunk, select=select, keys=[s.index for s in chunk])
        for (schedule, pruner), r in zip(configs, acc):
            t0 = time.perf_counter()
            out, pre = engine.generate(state, schedule, pruner, max_new_tokens=max_new_tokens,
                                       eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)  # fmt: skip
            r["sec"] += time.perf_counter() - t0
            r["pred"] += tok.batch_decode(out, skip_special_tokens=True)
            for b in range(len(chunk)):
                nt = pre.tokens[0][b] - pre.live_visual[0][b]
                r["nv"].append(state.n_visual[b]), r["kept"].append(pre.live_visual[0][b]), r["nt"].append(nt)
                r["live"].append([layer[b] for layer in pre.live_visual])
                r["flops"].append(prefill_flops(shape, [layer[b] for layer in pre.tokens]) + pre.score_flops[b])
                r["full"].append(prefill_flops(shape, [nt + state.n_visual[b]] * shape.layers))
    results = []
    for r in acc:
        correct = [is_correct(s, p) for s, p in zip(samples, r["pred"])]
        results.append(EvalResult(
            predictions=r["pred"],
            correct=correct,
            scores=accuracy([s.category for s in samples], correct),
            visual_tokens=_mean(r["nv"]),
            kept_visual_tokens=_mean(r["kept"]),
            text_tokens=_mean(r["nt"]),
            live_visual=[_mean(col) for col in zip(*r["live"])],
            llm_prefill_flops=_mean(r["flops"]),
            unpruned_flops=_mean(r["full"]),
            seconds=r["sec"],
        ))  # fmt: skip
    return results
