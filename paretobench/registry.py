"""Name registries for models, datasets, pruners and searchers.

Each entry is registered where it is defined: a pruner or searcher class by the decorator
``@PRUNERS.register("name", doc=...)`` above it, a model or dataset by a lazy ``"module:attribute"``
string in its package (``paretobench/models/__init__.py``, ``paretobench/data/__init__.py``). A
registry imports its packages (``discover``) the first time it is asked for a name, and the
modules that other installed packages name under the entry-point group ``paretobench.<kind>s``
(``[project.entry-points."paretobench.pruners"]`` in their pyproject), so a pruner, searcher,
model or dataset of one's own slots in without editing paretobench. ``import paretobench`` stays
free of torch: nothing is discovered until a name is used. An unknown name is an error that
suggests the closest ones; an entry that is not of the registry's base class is refused.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _resolve(target: str):
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    return value


class Registry:
    """``kind``: what it holds (for messages and the entry-point group); ``discover``: the
    packages whose import registers the built-in entries; ``base``: ``"module:Class"`` every class
    entry must subclass."""

    def __init__(self, kind: str, *, discover: tuple[str, ...] = (), base: str | None = None):
        self.kind, self.base = kind, base
        self._discover, self._discovered = tuple(discover), not discover
        self._entries: dict[str, str | Any] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, target: str | Any | None = None, *, doc: str = "") -> Callable | None:
        """``register("x", "pkg.mod:obj")``, or as a decorator ``@register("x")``."""

        def add(obj):
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            self._docs[name] = doc or (inspect.getdoc(obj) or "").split("\n")[0] if not isinstance(obj, str) else doc
            return obj

        if target is None:
            return add
        add(target)
        return None

    def _load(self) -> None:
        """Import the packages that register the built-in entries, then other packages' entry points."""
        if self._discovered:
            return
        self._discovered = True
        for module in self._discover:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"paretobench.{self.kind}s"):
            ep.load()  # importing it registers its entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def doc(self, name: str) -> str:
        self._check(name)
        return self._docs[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def _check(self, name: str) -> None:
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = f" (known: {', '.join(self.names()) or 'none yet'})" if not close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}{known}")

    def get(self, name: str) -> Any:
        """The registered object, importing it if it was registered by path (and checked against
        the registry's base class)."""
        self._check(name)
        obj = self._entries[name]
        if isinstance(obj, str):
            self._entries[name] = obj = _resolve(obj)
        if self.base is not None and isinstance(obj, type) and not issubclass(obj, _resolve(self.base)):
            raise RegistryError(f"{self.kind} {name!r} is registered as {obj.__qualname__}, which is not a "
                                f"{self.base.partition(':')[2]}")  # fmt: skip
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
    cls = PRUNERS.get(name)  # checked to be a Pruner
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


MODELS = Registry("model", discover=("paretobench.models",))
DATASETS = Registry("dataset", discover=("paretobench.data",))
PRUNERS = Registry("pruner", discover=("pruners",), base="pruners.base:Pruner")
SEARCHERS = Registry("searcher", discover=("searchers",), base="searchers.base:Searcher")

# the model every command uses when none is named; results/ is measured on it
DEFAULT_MODEL = "tiny-llava"
