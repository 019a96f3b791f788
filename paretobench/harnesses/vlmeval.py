"""A pruned model as a VLMEvalKit model, so VLMEvalKit's own ``run.py`` scores a found schedule.

``PrunedModel`` answers prompts about images with the model, pruner and schedule of an export
file (``paretobench export-vlmeval`` writes it), through the same engine as ``paretobench eval``;
it needs no harness. ``vlmeval_class()`` wraps it in VLMEvalKit's ``BaseModel`` and ``register``
puts it in VLMEvalKit's ``supported_VLM``, so ``run.py --model <name>`` finds it.
``paretobench.harnesses.lmms_eval`` wraps the same class for lmms-eval. Both harnesses require
torchvision, so they live in a second environment (``make eval-env``, see the README), never in
the CPU install.

The export file (JSON)::

    {"model": "/abs/path/to/model", "pruner": "fastv", "params": {}, "schedule": "1,1,0.5,...",
     "max_new_tokens": 16}

``schedule`` is null for the unpruned model. Prompts reach the model as the harness builds them
(VLMEvalKit's MCQ prompt is the same text ``paretobench eval`` builds), inside the model's chat
template.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

from paretobench.data.tsv import Sample

EXPORT_VERSION = 1
# run.py's reasons for leaving a model x dataset unscored that are failures (others, such as
# ``mode_infer``, are what was asked for)
NOT_SCORED = ("invalid_dataset", "No infer result found", "Incomplete infer result")


@dataclass
class PromptSample(Sample):
    """A sample whose prompt text is given whole (as a harness built it), with its image either
    encoded (``image_b64``) or already decoded (``pil``)."""

    text: str = ""
    pil: object = None

    def prompt(self) -> str:
        return self.text

    def image(self):
        return self.pil.convert("RGB") if self.pil is not None else super().image()


def read_export(path: str | Path) -> dict:
    """The export file's settings, checked: a clear error names the file and what is wrong."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable paretobench export ({e})") from None
    missing = [k for k in ("model", "pruner", "schedule") if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing {missing}; written by `paretobench export-vlmeval`?")
    return cfg


def _as_sample(prompt: str, image, key: str) -> PromptSample:
    """``image``: a file path, encoded bytes or a PIL image."""
    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    if isinstance(image, bytes):
        return PromptSample(index=key, question="", answer="", options={}, text=prompt,
                            image_b64=base64.b64encode(image).decode())  # fmt: skip
    return PromptSample(index=key, question="", answer="", options={}, image_b64=None, text=prompt, pil=image)


class PrunedModel:
    """The model, pruner and schedule of an export file, answering prompts about images.

    ``device``: ``auto`` (the first CUDA GPU when torch sees one, else the CPU), ``cpu`` or
    ``cuda[:N]``; ``dtype``: ``float32`` (default), ``bfloat16`` or ``float16``."""

    def __init__(self, export: str | Path | dict, *, device: str = "auto", dtype: str | None = None):
        from paretobench.models.loading import load_model, torch_dtype
        from paretobench.registry import build_pruner
        from paretobench.schedule import PruningSchedule

        cfg = export if isinstance(export, dict) else read_export(export)
        self.config = cfg
        self.loaded = load_model(cfg["model"], device=device, dtype=torch_dtype(dtype) if dtype else None)
        layers = self.loaded.model.config.text_config.num_hidden_layers
        self.schedule = PruningSchedule.parse(cfg["schedule"], layers) if cfg["schedule"] else None
        self.pruner = build_pruner(cfg["pruner"], cfg.get("params", {})) if self.schedule else None
        self.max_new_tokens = int(cfg.get("max_new_tokens", 16))

    def answers(self, items: list[tuple[str, object, str]], *, batch_size: int = 1,
                max_new_tokens: int | None = None) -> list[str]:  # fmt: skip
        """Greedy answers to ``(prompt, image, key)`` items, ``batch_size`` at a time. ``image``:
        a file path, encoded bytes or a PIL image; ``key``: the question's identity (the row's
        index in ``paretobench eval``), which seeds per-sample randomness (the ``random`` pruner)."""
        from paretobench.measure import evaluate

        samples = [_as_sample(prompt, image, str(key)) for prompt, image, key in items]
        result = evaluate(self.loaded.model, self.loaded.processor, samples, schedule=self.schedule,
                          pruner=self.pruner, batch_size=batch_size,
                          max_new_tokens=max_new_tokens or self.max_new_tokens)  # fmt: skip
        return [p.strip() for p in result.predictions]

    def answer(self, prompt: str, image, key: str = "0") -> str:
        """The greedy answer to ``prompt`` about ``image`` (a file path, encoded bytes or a PIL image)."""
        return self.answers([(prompt, image, key)])[0]

    def answer_message(self, message: list[dict], key: str | None = None) -> str:
        """A VLMEvalKit message (``[{"type": "image"|"text", "value": ...}, ...]``): its text parts
        joined, about its one image. ``key`` defaults to the image file's stem, which VLMEvalKit
        names after the row's index."""
        images = [m["value"] for m in message if m["type"] == "image"]
        if len(images) != 1:
            raise ValueError(f"this model answers about exactly one image; the message has {len(images)}")
        text = "\n".join(m["value"] for m in message if m["type"] == "text")
        return self.answer(text, images[0], Path(images[0]).stem if key is None else key)


def vlmeval_class():
    """``PrunedModel`` as a subclass of VLMEvalKit's ``BaseModel`` (imports VLMEvalKit)."""
    from vlmeval.vlm.base import BaseModel

    class ParetoBenchVLM(BaseModel):
        INTERLEAVE = False

        def __init__(self, export: str, **kwargs):
            super().__init__()
            self.pruned = PrunedModel(export, **kwargs)

        def generate_inner(self, message, dataset=None):
            return self.pruned.answer_message(message)

    return ParetoBenchVLM


def register(name: str, export: str | Path, **kwargs) -> None:
    """Make ``name`` a VLMEvalKit model (in ``vlmeval.config.supported_VLM``) that loads ``export``;
    ``kwargs`` (``device``, ``dtype``) go to ``PrunedModel``."""
    from functools import partial

    from vlmeval.config import supported_VLM

    supported_VLM[name] = partial(vlmeval_class(), export=str(Path(export).resolve()), **kwargs)


def find_run_py(repo: str | Path | None = None) -> Path:
    """VLMEvalKit's ``run.py``: in ``repo``, else beside the installed ``vlmeval`` package (an
    editable install of a checkout, as ``make eval-env`` makes)."""
    if repo is None:
        try:
            import vlmeval
        except ImportError:
            raise ValueError("VLMEvalKit is not installed here: give --vlmeval-repo, or use `make eval-env`") from None
        repo = Path(vlmeval.__file__).resolve().parent.parent
    run_py = Path(repo) / "run.py"
    if not run_py.is_file():
        raise ValueError(f"{repo} holds no run.py: give --vlmeval-repo, a VLMEvalKit checkout")
    return run_py


def run_status(work_dir: str | Path, name: str, since: datetime.datetime | None = None) -> dict:
    """What VLMEvalKit's latest run of model ``name`` under ``work_dir`` (its ``--work-dir``)
    recorded per dataset (``status.json``: status, metrics, error_message), from runs started at
    ``since`` or later; {} when there is none."""
    runs = sorted(p for p in (Path(work_dir) / name).glob("T*/status.json"))
    for path in reversed(runs):
        status = json.loads(path.read_text())
        started = datetime.datetime.fromisoformat(status["created_at"])
        if since is None or started >= since.replace(microsecond=0):
            return status.get("datasets", {})
    return {}


def main(argv: list[str] | None = None) -> int:
    """``python -m paretobench.harnesses.vlmeval EXPORT [EXPORT ...] [run.py arguments]``: run
    VLMEvalKit's ``run.py`` with the exported models registered by name (``--name`` for one export,
    else each file's stem). Exits 1 when VLMEvalKit recorded a failed model x dataset combination
    (``run.py`` itself logs the failure and goes on)."""
    p = argparse.ArgumentParser(prog="python -m paretobench.harnesses.vlmeval", description=main.__doc__)
    p.add_argument("exports", nargs="+", metavar="EXPORT", help="export files from `paretobench export-vlmeval`")
    p.add_argument("--vlmeval-repo", help="a VLMEvalKit checkout (the folder holding run.py; "
                                          "default: the installed vlmeval's)")  # fmt: skip
    p.add_argument("--name", help="the model name VLMEvalKit reports, for one export (default paretobench)")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu or cuda[:N]")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    args, rest = p.parse_known_args(argv)
    if args.name and len(args.exports) > 1:
        p.error("--name names one export; with several, each is named by its file's stem")
    names = [args.name or "paretobench"] if len(args.exports) == 1 else [Path(e).stem for e in args.exports]
    if len(set(names)) != len(names):
        p.error(f"two exports share a name: {names}")
    for export in args.exports:
        read_export(export)  # a bad file fails here, before VLMEvalKit starts
    run_py = find_run_py(args.vlmeval_repo)
    if any(a == "--model" or a.startswith("--model=") for a in rest):
        p.error("the exports are the models: give no --model")
    work_dir = argparse.ArgumentParser(add_help=False)
    work_dir.add_argument("--work-dir", default="./outputs")
    work_dir = os.environ.get("MMEVAL_ROOT", work_dir.parse_known_args(rest)[0].work_dir)  # run.py's override
    for name, export in zip(names, args.exports):
        register(name, export, device=args.device, dtype=args.dtype)
    started = datetime.datetime.now().astimezone()
    sys.argv = [str(run_py), "--model", *names, *rest]
    sys.path.insert(0, str(run_py.parent))
    runpy.run_path(str(run_py), run_name="__main__")
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 records the results
        return 0
    failed = [(name, data, s.get("error_message") or s.get("skip_reason") or s.get("status"))
              for name in names for data, s in run_status(work_dir, name, started).items()
              if s.get("error_message") or s.get("skip_reason") in NOT_SCORED or s.get("status") != "done"]  # fmt: skip
    for name, data, why in failed:
        print(f"paretobench: VLMEvalKit did not score {name} on {data}: {why}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
