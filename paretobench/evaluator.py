"""The evaluator of the search harness: schedules in, ``Evaluation`` records out.

A ``Workload`` names what is evaluated (model, datasets, pruner, batch size): small, picklable,
so a Ray actor builds its own ``Evaluator`` from it. The ``Evaluator`` loads the model and the
data once and evaluates a chunk of schedules together: each batch of images is encoded once
and shared by every schedule of the chunk (``evaluate_many``).

Objectives: ``flops_fraction`` (LLM prefill FLOPs, score rows included, over the unpruned
prefill of the same inputs; lower is better) and ``accuracy`` (mean over groups, higher is
better). Groups are the categories of a single dataset (synth8's eight families), or the
datasets themselves when several are given (the paper's average over benchmarks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

from paretobench.evaluation import Evaluation, content_hash, evaluation_key
from paretobench.registry import DEFAULT_MODEL
from paretobench.schedule import PruningSchedule
from searchers.base import SearchSpace


@dataclass(frozen=True)
class Workload:
    model: str = DEFAULT_MODEL
    data: tuple[str, ...] = ("synth8",)
    limit: int | None = None  # first N questions of each file
    pruner: str = "fastv"
    pruner_params: tuple[tuple[str, object], ...] = ()  # keyword arguments of the pruner's class
    batch_size: int = 32
    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "auto"  # where the model runs: auto (a CUDA GPU if there is one), cpu, cuda, cuda:1, ...
    dtype: str = "float32"  # the model's weights and activations; other than float32 it is part of the key
    max_new_tokens: int | None = None  # the greedy answer's length limit (None: what fits the data); in the key


def prompt_token_counts(processor, config, samples, *, chunk: int = 64) -> tuple[float, int]:
    """Mean text tokens of the samples' prompts and their mean visual tokens (rounded), as the
    processor lays out the model's inputs (``paretobench.adapters.text_token_counts`` without a
    model: the image token's id comes from the config). At native resolution (Qwen) the visual
    count follows each image's size. A search space built on the mean reads a schedule's FLOPs
    fraction at a typical input; the evaluator still measures every input's own."""
    from paretobench.adapters import chat_prompts

    processor.tokenizer.padding_side = "left"
    n_text = n_visual = 0
    for i in range(0, len(samples), chunk):
        batch = samples[i : i + chunk]
        # one image per sample, each in a list of its own: every processor takes that form
        inputs = processor(images=[[s.image()] for s in batch], text=chat_prompts(processor, batch),
                           return_tensors="pt", padding=True)  # fmt: skip
        visual = int((inputs["input_ids"] == config.image_token_id).sum())
        n_visual += visual
        n_text += int(inputs["attention_mask"].sum()) - visual
    return n_text / len(samples), round(n_visual / len(samples))


@dataclass
class Evaluator:
    workload: Workload
    _loaded: dict = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- cheap, driver side
    @cached_property
    def datasets(self):
        from paretobench.data.datasets import load_dataset

        return [load_dataset(d, limit=self.workload.limit) for d in self.workload.data]

    @cached_property
    def samples(self):
        return [s for d in self.datasets for s in d.samples]

    @cached_property
    def groups(self) -> list[str]:
        """Per sample, the group its accuracy is averaged in."""
        if len(self.datasets) == 1:
            return [s.category for s in self.samples]
        return [d.name for d in self.datasets for _ in d.samples]

    @cached_property
    def data_key(self) -> str:
        return content_hash({"files": [d.fingerprint for d in self.datasets], "limit": self.workload.limit,
                             "samples": [s.index for s in self.samples]})  # fmt: skip

    @cached_property
    def max_new_tokens(self) -> int:
        from paretobench.measure import default_max_new_tokens

        return self.workload.max_new_tokens or default_max_new_tokens(self.samples)

    @cached_property
    def model_key(self) -> str:
        from paretobench.models.loading import model_fingerprint

        return model_fingerprint(self.workload.model)

    @cached_property
    def pruner(self):
        from paretobench.registry import build_pruner

        return build_pruner(self.workload.pruner, dict(self.workload.pruner_params))

    def key(self, schedule: PruningSchedule) -> str:
        from paretobench.scoring import SCORING_VERSION

        # float32 results keep the keys they had before precision was a setting
        model = self.model_key if self.workload.dtype == "float32" else f"{self.model_key}@{self.workload.dtype}"
        return evaluation_key(model=model, data=self.data_key, pruner=self.pruner.config(), schedule=schedule.keep,
                              scoring=SCORING_VERSION, generation={"max_new_tokens": self.max_new_tokens})  # fmt: skip

    # ---------------------------------------------------------------- needs the model
    @property
    def loaded(self):
        if "model" not in self._loaded:
            from paretobench.models.loading import load_model, torch_dtype

            if self.workload.threads:
                import torch

                torch.set_num_threads(self.workload.threads)
            self._loaded["model"] = load_model(self.workload.model, device=self.workload.device,
                                               dtype=torch_dtype(self.workload.dtype))  # fmt: skip
        return self._loaded["model"]

    @cached_property
    def space(self) -> SearchSpace:
        """The search space, from the model's processor and config alone (no weights are read:
        under Ray the driver never loads the model)."""
        from paretobench.flops import DecoderShape
        from paretobench.models.loading import load_config, load_processor

        config = load_config(self.workload.model)
        n_text, n_visual = prompt_token_counts(load_processor(self.workload.model), config, self.samples)
        return SearchSpace(DecoderShape.from_config(config.get_text_config()), round(n_text), n_visual,
                           pruner=self.workload.pruner, score=self.pruner.score_cost())  # fmt: skip

    def evaluate(self, schedules: list[PruningSchedule]) -> list[Evaluation]:
        """Evaluate the schedules together (image encodings shared), in order."""
        from paretobench.measure import evaluate_many
        from paretobench.scoring import accuracy

        layers = self.space.layers
        for s in schedules:
            s.check_layers(layers)
        m = self.loaded
        results = evaluate_many(m.model, m.processor, self.samples, [(s, self.pruner) for s in schedules],
                                batch_size=self.workload.batch_size, max_new_tokens=self.max_new_tokens)  # fmt: skip
        out = []
        for s, r in zip(schedules, results):
            scores = accuracy(self.groups, r.correct)
            out.append(Evaluation(
                key=self.key(s), data=self.data_key, pruner=self.pruner.config(), schedule=list(s.keep),
                flops=r.llm_prefill_flops, unpruned_flops=r.unpruned_flops,
                flops_fraction=r.llm_prefill_flops / r.unpruned_flops,
                accuracy=scores["mean_of_categories"], overall=scores["accuracy"],
                per_category=scores["per_category"], correct=list(r.correct), live_visual=r.live_visual,
                seconds=r.seconds, created=time.time(),
            ))  # fmt: skip
        return out
