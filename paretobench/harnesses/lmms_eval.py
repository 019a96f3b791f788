"""A pruned model as an lmms-eval model, and lmms-eval tasks over VLMEvalKit-format TSVs (offline).

The model: ``lmms-eval --model paretobench --model_args pick=pick.json`` (``pick.json`` from
``paretobench export-vlmeval``; optional ``device=`` and ``dtype=`` too), found through the
``lmms_eval.models`` entry point of this package. It answers ``generate_until`` requests with the
export's model, pruner and schedule, through the same engine as ``paretobench eval``, batched by
lmms-eval's ``--batch_size``; one image per question. lmms-eval's own tasks work as they are
(their prompts, their scoring).

The tasks: ``python -m paretobench.harnesses.lmms_eval task --data D --out DIR`` writes an lmms-eval
task over ``D`` (anything ``paretobench eval --data`` takes: ``synth8``, a TSV, a folder of them)
into DIR; ``--include_path DIR --tasks NAME`` runs it with no hub. Its prompt is the one
``paretobench eval`` builds (VLMEvalKit's), and it scores by ``paretobench.scoring`` (VLMEvalKit's
exact matching): ``accuracy`` overall and ``accuracy_<category>`` per category.

This module imports lmms-eval (which requires torchvision): use it in the harness environment
(``make eval-env``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from lmms_eval.api.model import lmms

from paretobench.harnesses.vlmeval import PrunedModel, read_export

MODEL_NAME = "paretobench"
MODULE = "paretobench.harnesses.lmms_eval"  # not __name__, which is __main__ under python -m


def manifest():
    """The ``lmms_eval.models`` entry point: ``--model paretobench`` is ``ParetoBench``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{MODULE}.ParetoBench")


class ParetoBench(lmms):
    """An export file's pruned model. ``pick``: the export file; ``batch_size``: questions
    answered together (lmms-eval's ``--batch_size``); ``device``: ``auto`` (default; CUDA when
    available, ``cuda:LOCAL_RANK`` under a multi-process launch), ``cpu`` or ``cuda[:N]``;
    ``dtype``: ``float32`` (default), ``bfloat16`` or ``float16``."""

    is_simple = True

    def __init__(self, pick: str, batch_size: int | str | None = 1, device: str | None = None,
                 dtype: str | None = None, max_batch_size: int | None = None, **kwargs):  # fmt: skip
        super().__init__()
        if kwargs:
            raise ValueError(f"paretobench model: unknown model_args {sorted(kwargs)} (known: pick, device, dtype)")
        if str(batch_size).startswith("auto"):
            raise ValueError("paretobench model: give a number as --batch_size (no automatic sizing)")
        self.batch_size = int(batch_size or 1)
        self._rank = int(os.environ.get("RANK", "0"))
        self._world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if device in (None, "auto") and self._world_size > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        read_export(pick)  # a bad file fails before the model loads
        self.pruned = PrunedModel(pick, device=device or "auto", dtype=dtype)

    @property
    def device(self):
        return self.pruned.loaded.model.device

    def generate_until(self, requests) -> list[str]:
        """Greedy answers, stopped at the first of the request's ``until`` strings. A request's
        ``max_new_tokens`` (the task's) wins over the export's."""
        from tqdm.auto import tqdm

        groups: dict[int, list[int]] = {}
        items = []
        for i, request in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            visuals = [v for v in doc_to_visual(doc) if v is not None]
            if len(visuals) != 1:
                raise ValueError(f"{task} question {doc_id}: this model answers about exactly one image, "
                                 f"the question has {len(visuals)}")  # fmt: skip
            # the question's identity seeds per-sample randomness, as the row's index does in paretobench eval
            key = doc.get("index", doc_id) if isinstance(doc, dict) else doc_id
            items.append((context, visuals[0], str(key)))
            groups.setdefault(int(gen_kwargs.get("max_new_tokens") or self.pruned.max_new_tokens), []).append(i)
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
                warnings.warn(f"{task} asks for sampling; the paretobench model answers greedily", stacklevel=2)
        out: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="paretobench", disable=self.rank != 0)
        for max_new_tokens, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                answers = self.pruned.answers([items[i] for i in chunk], batch_size=self.batch_size,
                                              max_new_tokens=max_new_tokens)  # fmt: skip
                for i, answer in zip(chunk, answers):
                    out[i] = _until(answer, requests[i].args[1].get("until"))
                bar.update(len(chunk))
        bar.close()
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("the paretobench model answers generate_until tasks only (greedy generation)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("the paretobench model answers one round per question")


def _until(answer: str, until) -> str:
    """``answer`` cut at the first stop string."""
    for stop in [until] if isinstance(until, str) else until or []:
        if stop:
            answer = answer.split(stop, 1)[0]
    return answer.strip()


# --- a task over VLMEvalKit-format rows --------------------------------------------------------


def _sample(doc: dict):
    from paretobench.data.tsv import Sample

    return Sample(index=doc["index"], question=doc["question"], answer=doc["answer"],
                  options=json.loads(doc["options"]), image_b64=doc["image"], category=doc["category"],
                  hint=doc["hint"] or None)  # fmt: skip


def doc_to_visual(doc: dict) -> list:
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(doc["image"]))).convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The prompt ``paretobench eval`` builds (VLMEvalKit's)."""
    return _sample(doc).prompt()


def process_results(doc: dict, results: list[str]) -> dict:
    """Correctness by ``paretobench.scoring`` (VLMEvalKit's exact matching), overall and for the
    question's category."""
    from paretobench.scoring import is_correct

    correct = float(is_correct(_sample(doc), results[0]))
    return {"accuracy": correct, f"accuracy_{_metric_name(doc['category'])}": correct}


def _metric_name(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "none"


@dataclass
class TaskFiles:
    name: str
    yaml: Path
    data: Path
    n: int


def write_task(data: str, out: str | Path, *, name: str | None = None, limit: int | None = None) -> TaskFiles:
    """An lmms-eval task over ``data`` (any ``paretobench eval --data``: a registered dataset, a
    TSV, a folder of them, a VLMEvalKit benchmark name under ``$LMUData``): ``out/<name>.yaml``
    and its rows, ``out/<name>.jsonl`` (read by our TSV reader, so shared images and hints are
    resolved as ``paretobench eval`` resolves them). ``limit``: the first N rows of each file,
    as ``--limit``. ``name`` defaults to ``paretobench_<dataset>``: apart from lmms-eval's own
    tasks, and from the data folder's name (lmms-eval reads ``--tasks X`` as a folder of task files
    when the working directory holds a folder ``X``)."""
    from paretobench.data.datasets import load_dataset
    from paretobench.measure import default_max_new_tokens

    dataset = load_dataset(data, limit=limit)
    name = name or f"paretobench_{_metric_name(dataset.name)}"
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = out / f"{name}.jsonl"
    with open(rows, "w") as f:
        for s in dataset.samples:
            f.write(json.dumps({"index": s.index, "question": s.question, "hint": s.hint or "",
                                "options": json.dumps(s.options), "answer": s.answer, "category": s.category,
                                "image": s.image_b64}) + "\n")  # fmt: skip
    fn = f"!function {MODULE}"
    metrics = ["accuracy"] + [f"accuracy_{_metric_name(c)}" for c in dataset.categories]
    metric_list = "".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n" for m in metrics)
    yaml = out / f"{name}.yaml"
    yaml.write_text(
        f"# written by `python -m {MODULE} task`: {len(dataset.samples)} questions of {json.dumps(data)}\n"
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files: {{test: {json.dumps(str(rows))}}}\n"
        f"  cache_dir: {json.dumps(str(out / '.hf-datasets'))}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        f"doc_to_visual: {fn}.doc_to_visual\n"
        f"doc_to_text: {fn}.doc_to_text\n"
        "doc_to_target: answer\n"
        f"process_results: {fn}.process_results\n"
        "generation_kwargs:\n"
        f"  max_new_tokens: {default_max_new_tokens(dataset.samples)}\n"
        "  until: []\n"  # no stop strings (lmms-eval's default is a blank line): the answer paretobench eval scores
        "  temperature: 0\n"
        "  do_sample: false\n"
        f"metric_list:\n{metric_list}"
        "metadata:\n"
        "  version: 1\n"
        f"  data_fingerprint: {dataset.fingerprint}\n"
    )  # fmt: skip
    return TaskFiles(name=name, yaml=yaml, data=rows, n=len(dataset.samples))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="lmms-eval helpers for paretobench")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("task", help="write an lmms-eval task over VLMEvalKit-format rows (offline)")
    t.add_argument("--data", required=True, help="a registered dataset, a VLMEvalKit .tsv file, or a folder of them")
    t.add_argument("--out", required=True, help="the folder to write the task into (give it as --include_path)")
    t.add_argument("--name", help="the task's name (default: paretobench_<dataset>)")
    t.add_argument("--limit", type=int, help="first N questions of each file")
    args = p.parse_args(argv)
    task = write_task(args.data, args.out, name=args.name, limit=args.limit)
    print(f"wrote {task.yaml} ({task.n} questions); run it with: lmms-eval --model {MODEL_NAME} "
          f"--model_args pick=PICK.json --include_path {task.yaml.parent} --tasks {task.name}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
