"""paretobench: find and benchmark Pareto-optimal visual-token pruning configurations for VLMs.

The Python API is five functions (``paretobench.api``): ``load`` a model, ``evaluate`` it
unpruned or pruned, ``run`` a search, measure a run's ``frontier`` against a reference, and
``report`` the paper's tables. Importing this package is cheap: torch, transformers and the
model code load only when one of them runs.
"""

__version__ = "0.1.0"
__all__ = ["evaluate", "frontier", "load", "report", "run"]


def __getattr__(name: str):
    if name in __all__:
        from paretobench import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
