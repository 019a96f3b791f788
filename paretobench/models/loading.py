"""Load a VLM and its processor from a local folder (never from a hub)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


class ModelError(ValueError):
    """A model folder is missing or is not a usable Hugging Face VLM."""


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: object  # transformers PreTrainedModel, in eval mode
    processor: object


def resolve_model_dir(spec: str) -> tuple[str, Path]:
    """A registered model name or a folder path -> (name, folder)."""
    from paretobench.registry import MODELS

    if spec in MODELS:
        return spec, Path(MODELS.get(spec)())
    path = Path(spec)
    if path.exists() or os.sep in spec:
        return path.name, path
    MODELS.get(spec)  # raises: unknown name, with suggestions
    raise AssertionError("unreachable")


def check_model_dir(spec: str) -> tuple[str, Path]:
    """Resolve ``spec`` and check, cheaply, that the folder holds a saved model (and that a
    broken torchvision will not stop transformers from reading it: ``hide_broken_torchvision``;
    every command passes here before transformers reads a model folder)."""
    hide_broken_torchvision()
    name, path = resolve_model_dir(spec)
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json; expected a folder written by save_pretrained")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelError(f"{path} holds no weights (*.safetensors)")
    return name, path


def image_only(processor_cls):
    """``processor_cls`` (a Qwen-VL processor class) accepting no video processor."""

    class ImageOnly(processor_cls):
        def check_argument_for_proper_class(self, name, arg):
            if name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_cls.__name__
    return ImageOnly


def image_only_processor(path: str | Path):
    """A saved Qwen-VL processor's tokenizer, image processor and chat template, without the
    video processor (for machines without torchvision)."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    path = Path(path)
    cls = getattr(transformers, json.loads((path / "processor_config.json").read_text())["processor_class"])
    template = path / "chat_template.jinja"
    return image_only(cls)(
        image_processor=AutoImageProcessor.from_pretrained(path, local_files_only=True),
        tokenizer=AutoTokenizer.from_pretrained(path, local_files_only=True),
        chat_template=template.read_text() if template.is_file() else None,
    )


DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> str:
    """``auto``: the first CUDA GPU if torch sees one, else the CPU; other names pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    """What a benchmark names the machine it timed: the GPU's name, or ``CPU: <model name>``."""
    import platform

    import torch

    device = resolve_device(device)
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()}"


def synchronizer(device: str):
    """A function that waits for ``device``'s queued work (a no-op on the CPU): call it before
    reading a timer, or a GPU's asynchronous launches would be timed instead of the work."""
    import torch

    return torch.cuda.synchronize if resolve_device(device).startswith("cuda") else (lambda: None)


def torch_dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})")
    import torch

    return getattr(torch, name)


def hide_broken_torchvision() -> None:
    """``pip install torchvision`` next to a CPU torch gives a torchvision built for another
    torch: it is found but fails to import ("operator torchvision::nms does not exist"), and
    transformers, which takes a found torchvision as usable, then cannot import any processor.
    Such a torchvision is hidden (``sys.modules`` holds None for it, which transformers' check
    reads as absent), so transformers uses its PIL image processors, as without torchvision; a
    one-line note on stderr says so. It must run before transformers first imports a model's
    module (any of them imports torchvision when it is found)."""
    import importlib.util
    import sys

    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # a broken build raises RuntimeError, ImportError or OSError
        sys.modules["torchvision"] = None
        print(f"paretobench: torchvision is installed but does not import ({type(e).__name__}: {e}); "
              "using PIL image processors (pip uninstall torchvision, or install the build made for this torch)",
              file=sys.stderr)  # fmt: skip


def load_processor(spec: str):
    """The model folder's processor (``AutoProcessor``), offline; no weights are read."""
    _, path = check_model_dir(spec)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, local_files_only=True)
    except ImportError as e:  # Qwen-VL processors also build a video processor, which needs torchvision
        if "torchvision" not in str(e).lower() or not (path / "processor_config.json").is_file():
            raise ModelError(f"cannot load the processor of {path}: {e}") from e
        return image_only_processor(path)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot load the processor of {path}: {e}") from e


def load_config(spec: str):
    """The model folder's config (``AutoConfig``), offline; no weights are read."""
    _, path = check_model_dir(spec)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot read the config of {path}: {e}") from e


def load_model(spec: str, *, dtype=None, device: str = "cpu") -> LoadedModel:
    """Load with ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a local folder, offline."""
    name, path = check_model_dir(spec)
    processor = load_processor(spec)
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar for loading a few MB only clutters the output
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=dtype or torch.float32
        )
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot load a vision-language model from {path}: {e}") from e
    try:
        model.to(resolve_device(device)).eval()
    except (RuntimeError, AssertionError) as e:  # e.g. "cuda" on a machine without a GPU
        raise ModelError(f"cannot put the model on device {device!r}: {e}") from e
    return LoadedModel(name=name, path=path, model=model, processor=processor)


# files of a model folder that document it but change nothing it computes
_DOCUMENTATION = {"README.md", "card.json", "training.json"}
# what else a model folder holds that changes its inputs or outputs: config, generation config,
# tokenizer (vocabularies, merges, special tokens), chat template, processor and image processor
_INPUT_FILES = ("*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken")


def model_fingerprint(spec: str) -> str:
    """A content fingerprint of a model folder, cheap even for checkpoints of many GB: sha256
    over every file that changes what the model computes or is given (config, generation config,
    tokenizer, chat template, processor and image-processor settings such as Qwen's min/max
    pixels), whole, and, for every weight file, its name, size and first and last MiB."""
    import hashlib

    _, path = check_model_dir(spec)
    h = hashlib.sha256()
    inputs = sorted({f for pattern in _INPUT_FILES for f in path.glob(pattern)} - {path / n for n in _DOCUMENTATION})
    for f in inputs:
        data = f.read_bytes()
        h.update(f"{f.name}:{len(data)}:".encode())
        h.update(data)
    for f in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()
