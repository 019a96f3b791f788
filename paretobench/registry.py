"""Name registries for models, datasets, pruners and searchers.

Entries are lazy ``"module:attribute"`` strings, imported on first use, so ``import
paretobench`` stays free of torch. An unknown name is an error that suggests the closest ones.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, str | Any] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, target: str | Any | None = None, *, doc: str = "") -> Callable | None:
        """``register("x", "pkg.mod:obj")``, or as a decorator ``@register("x")``."""

        def add(obj):
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            self._docs[name] = doc
            return obj

        if target is None:
            return add
        add(target)
        return None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def doc(self, name: str) -> str:
        self._check(name)
        return self._docs[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def _check(self, name: str) -> None:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = f" (known: {', '.join(self.names()) or 'none yet'})" if not close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}{known}")

    def get(self, name: str) -> Any:
        """The registered object, importing it if it was registered by path."""
        self._check(name)
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            value = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                value = getattr(value, part)
            self._entries[name] = obj = value
        return obj


def parse_params(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["positions=keep", "recycle=0"]`` (the command line's ``--pruner-param``) as a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RegistryError(f"pruner parameter {pair!r}: expected KEY=VALUE, e.g. positions=keep")
        out[key.strip()] = value.strip()
    return out


def _convert(value, default, what: str):
    """A command-line string as the type of the parameter's default (values of other types pass)."""
    if not isinstance(value, str) or default is inspect.Parameter.empty or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return type(default)(value) if default is not None else value
    except ValueError:
        raise RegistryError(f"{what}={value!r}: not a valid {type(default).__name__}") from None


def build_pruner(name: str, params: dict | None = None):
    """The registered pruner ``name`` built with ``params`` (its constructor's keyword arguments,
    as values or command-line strings). An unknown parameter is an error that lists the valid
    ones and suggests the closest; an object that is not a ``Pruner`` is refused."""
    cls = PRUNERS.get(name)
    from pruners.base import Pruner

    if not (isinstance(cls, type) and issubclass(cls, Pruner)):
        raise RegistryError(f"pruner {name!r} is registered as {cls!r}, which is not a Pruner class")
    signature = inspect.signature(cls.__init__)
    accepted = {k: p.default for k, p in signature.parameters.items() if k != "self" and p.kind == p.KEYWORD_ONLY
                or k != "self" and p.kind == p.POSITIONAL_OR_KEYWORD}  # fmt: skip
    params = dict(params or {})
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            valid = ", ".join(accepted) or "none"
            raise RegistryError(f"pruner {name!r} has no parameter {key!r}{hint} (valid: {valid})")
    return cls(**{k: _convert(v, accepted[k], f"{name} {k}") for k, v in params.items()})


MODELS = Registry("model")
DATASETS = Registry("dataset")
PRUNERS = Registry("pruner")
SEARCHERS = Registry("searcher")

# the model every command uses when none is named; results/ is measured on it
DEFAULT_MODEL = "tiny-llava"

MODELS.register(
    "tiny-llava",
    "paretobench.models.tiny_llava:embedded_dir",
    doc="embedded LLaVA (CLIP tower + 8-layer Llama, 144 visual tokens), trained on synth8",
)
MODELS.register(
    "tiny-qwen2.5-vl",
    "paretobench.models.tiny_qwen:embedded_dir",
    doc="embedded Qwen2.5-VL (windowed ViT + 2x2 merger, 8-layer Qwen2 decoder, 16-256 visual tokens by image "
    "size), trained on synth8-native",
)
DATASETS.register(
    "synth8",
    "paretobench.data.datasets:synth8",
    doc="synthetic 8-family VQA benchmark (test split, 250 per family, seed 0), generated on first use",
)
DATASETS.register(
    "synth8-train",
    "paretobench.data.datasets:synth8_train",
    doc="synth8's train split (128 per family, seed 0; questions apart from the test split), for VisPCO",
)
DATASETS.register(
    "synth8-native",
    "paretobench.data.datasets:synth8_native",
    doc="synth8's questions with every image at its own size, 64-256 pixels a side (for native-resolution models)",
)
DATASETS.register(
    "synth8-native-train",
    "paretobench.data.datasets:synth8_native_train",
    doc="synth8-native's train split (128 per family, seed 0), for VisPCO",
)
PRUNERS.register("fastv", "pruners.fastv:FastV", doc="last position's head-mean attention, layer before the step")
PRUNERS.register("random", "pruners.baselines:Random", doc="uniformly random tokens, seeded per sample and layer")
PRUNERS.register("spatial", "pruners.baselines:Spatial", doc="evenly spaced tokens over the image (coverage)")
PRUNERS.register("pyramiddrop", "pruners.pyramiddrop:PyramidDrop", doc="staged drops, last-token attention at the layer")
PRUNERS.register("sparsevlm", "pruners.sparsevlm:SparseVLM",
                 doc="text raters' attention; the best dropped tokens recycled as cluster tokens")
PRUNERS.register("fitprune", "pruners.fitprune:FitPrune", doc="text x visual attention received; recipe fitted to a budget")
PRUNERS.register("vitcop", "pruners.vitcop:ViTCoP",
                 doc="vision-stage CLS attention and VIC clusters, then K-norm per cluster with merging, a deep top-k")
SEARCHERS.register("grid", "searchers:Grid", doc="the paper's per-layer sampling (C.1.3), or a single-step lattice")
SEARCHERS.register("random", "searchers:Random", doc="Random-N: n random schedules meeting the budgets")
SEARCHERS.register("nsga2", "searchers:NSGA2", doc="Optuna NSGA-II on (FLOPs, accuracy)")
SEARCHERS.register("pymoo", "searchers:Pymoo", doc="pymoo SMS-EMOA (or NSGA-II, AGE-MOEA) on (FLOPs, error)")
SEARCHERS.register("gsearch", "searchers:GSearch", doc="greedy per-layer minimum, then a sigmoid curve tuned by BO")
SEARCHERS.register("preset", "searchers:Preset", doc="the pruner's default, vtw-K for every K, aim")
SEARCHERS.register("vispco", "searchers:VisPCO", doc="VisPCO: a ratio predictor trained by gradient through a relaxed forward")
