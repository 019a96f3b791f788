"""A pruned model as a VLMEvalKit model, so VLMEvalKit's own ``run.py`` scores a found schedule.

``PrunedModel`` answers one VLMEvalKit message (images and text) with the model, pruner and
schedule of an export file (``paretobench export-vlmeval`` writes it); it needs no VLMEvalKit.
``vlmeval_class()`` wraps it in VLMEvalKit's ``BaseModel`` and ``register`` puts it in
VLMEvalKit's ``supported_VLM``, so ``run.py --model <name>`` finds it. VLMEvalKit requires
torchvision, which has no CPU build: install it on a GPU machine
(``pip install -e .[vlmeval]`` from a VLMEvalKit clone, see the README).

The export file (JSON)::

    {"model": "/abs/path/to/model", "pruner": "fastv", "params": {}, "schedule": "1,1,0.5,...",
     "max_new_tokens": 16}

``schedule`` is null for the unpruned model. Prompts reach the model as VLMEvalKit builds them
(the MCQ prompt is the same text ``paretobench eval`` builds), inside the model's chat template.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from paretobench.data.tsv import Sample

EXPORT_VERSION = 1


@dataclass
class PromptSample(Sample):
    """A sample whose prompt text is given whole (as VLMEvalKit built it)."""

    text: str = ""

    def prompt(self) -> str:
        return self.text


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


class PrunedModel:
    """The model, pruner and schedule of an export file, answering one prompt at a time."""

    def __init__(self, export: str | Path | dict, *, device: str = "cpu"):
        from paretobench.models.loading import load_model
        from paretobench.registry import PRUNERS
        from paretobench.schedule import PruningSchedule

        cfg = export if isinstance(export, dict) else read_export(export)
        self.config = cfg
        self.loaded = load_model(cfg["model"], device=device)
        layers = self.loaded.model.config.text_config.num_hidden_layers
        self.schedule = PruningSchedule.parse(cfg["schedule"], layers) if cfg["schedule"] else None
        self.pruner = PRUNERS.get(cfg["pruner"])(**cfg.get("params", {})) if self.schedule else None
        self.max_new_tokens = int(cfg.get("max_new_tokens", 16))

    def answer(self, prompt: str, image: str | Path | bytes) -> str:
        """The greedy answer to ``prompt`` about ``image`` (a file path or encoded bytes)."""
        from paretobench.evaluate import evaluate

        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        sample = PromptSample(index="0", question="", answer="", options={},
                              image_b64=base64.b64encode(data).decode(), text=prompt)  # fmt: skip
        result = evaluate(self.loaded.model, self.loaded.processor, [sample], schedule=self.schedule,
                          pruner=self.pruner, max_new_tokens=self.max_new_tokens)  # fmt: skip
        return result.predictions[0].strip()

    def answer_message(self, message: list[dict]) -> str:
        """A VLMEvalKit message (``[{"type": "image"|"text", "value": ...}, ...]``): its text parts
        joined, about its first image (the model takes one image per prompt)."""
        images = [m["value"] for m in message if m["type"] == "image"]
        if len(images) != 1:
            raise ValueError(f"this model answers about exactly one image; the message has {len(images)}")
        text = "\n".join(m["value"] for m in message if m["type"] == "text")
        return self.answer(text, images[0])


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


def register(name: str, export: str | Path) -> None:
    """Make ``name`` a VLMEvalKit model (in ``vlmeval.config.supported_VLM``) that loads ``export``."""
    from functools import partial

    from vlmeval.config import supported_VLM

    supported_VLM[name] = partial(vlmeval_class(), export=str(Path(export).resolve()))


def main(argv: list[str] | None = None) -> None:
    """``python -m paretobench.vlmeval_model EXPORT --vlmeval-repo DIR [run.py arguments]``: run
    VLMEvalKit's ``run.py`` (from a clone at DIR) with the exported model registered by name."""
    p = argparse.ArgumentParser(prog="python -m paretobench.vlmeval_model", description=main.__doc__)
    p.add_argument("export", help="an export file from `paretobench export-vlmeval`")
    p.add_argument("--vlmeval-repo", required=True, help="a VLMEvalKit clone (the folder holding run.py)")
    p.add_argument("--name", default="paretobench", help="the model name VLMEvalKit reports (default paretobench)")
    args, rest = p.parse_known_args(argv)
    read_export(args.export)  # a bad file fails here, before VLMEvalKit starts
    register(args.name, args.export)
    sys.path.insert(0, str(Path(args.vlmeval_repo).resolve()))
    sys.argv = ["run.py", "--model", args.name, *rest]
    import run  # VLMEvalKit's run.py; it reads sys.argv

    run.main()


if __name__ == "__main__":
    main()
