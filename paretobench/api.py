"""The Python API: what the command line does, as five functions.

    import paretobench as pb

    model = pb.load("tiny-llava")                                   # or a local model folder
    result = pb.evaluate(model, "synth8", pruner="fastv", budget=0.5, limit=16)
    print(result["accuracy"], result["flops"]["fraction"])
    outcome = pb.run("vispco", pruner="fastv", limit=64, out="runs")  # search, every evaluation stored
    print(pb.frontier(outcome.folder, vs="results/search/grid-fastv-..."))
    pb.report("all", "runs", out="tables")

Each function imports torch and the model code when it runs, not when ``paretobench`` is
imported. Results are the dictionaries the command line prints with ``--json``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["evaluate", "frontier", "load", "report", "run"]


def load(model: str, *, device: str = "auto", dtype: str = "float32"):
    """A model by registered name (``paretobench list``) or local folder (``save_pretrained``),
    with its processor, in eval mode on ``device``: a ``LoadedModel`` (``.model``, ``.processor``)."""
    from paretobench.models.loading import load_model, torch_dtype

    return load_model(model, device=device, dtype=torch_dtype(dtype))


def evaluate(model, data: str = "synth8", *, pruner: str | None = None, schedule: str | None = None,
             preset: str | None = None, budget: float | None = None, pruner_params: dict | None = None,
             limit: int | None = None, calibration: str | None = None, max_new_tokens: int | None = None,
             batch_size: int = 32) -> dict:  # fmt: skip
    """Greedy answers on ``data`` (a registered dataset, a VLMEvalKit TSV or a folder of them),
    unpruned or pruned: by ``schedule`` (``"2:0.5"`` or one keep fraction per layer), a named
    ``preset`` or a FLOPs ``budget``. Returns accuracy (overall and per category), prefill FLOPs
    (absolute and as a fraction of unpruned), live visual tokens per layer and time, as
    ``paretobench eval --json`` prints them. ``model``: a ``load`` result or a name / folder."""
    from paretobench.cli.eval import budget_schedule, calibration_set, evaluate_to_dict
    from paretobench.data.datasets import load_dataset
    from paretobench.presets import resolve
    from paretobench.registry import build_pruner
    from paretobench.schedule import PruningSchedule

    if sum(x is not None for x in (schedule, preset, budget)) > 1:
        raise ValueError("give one of schedule, preset and budget")
    loaded = load(model) if isinstance(model, (str, Path)) else model
    dataset = load_dataset(str(data), limit=limit)
    name = pruner or ("fastv" if any(x is not None for x in (schedule, preset, budget)) else None)
    chosen = build_pruner(name, pruner_params) if name else None
    layers = loaded.model.config.get_text_config().num_hidden_layers
    if schedule is not None:
        plan = PruningSchedule.parse(schedule, layers)
    elif preset is not None:
        plan = chosen.preset(layers) if preset == f"{name}-default" else resolve(preset, layers)
    elif budget is not None:
        fitted = calibration_set(str(data), calibration, dataset).samples if hasattr(chosen, "fit") else None
        plan = budget_schedule(budget, loaded, dataset, chosen, fitted)
    else:
        plan = None
    return evaluate_to_dict(loaded, dataset, batch_size=batch_size, schedule=plan, pruner=chosen,
                            max_new_tokens=max_new_tokens)  # fmt: skip


def run(searcher: str, *, pruner: str = "fastv", model: str | None = None, data=("synth8",),
        budgets=(0.3, 0.5, 0.7), n: int = 40, out: str = "runs", progress: bool = True, **settings):  # fmt: skip
    """Search schedules with ``searcher`` (``paretobench list``), every evaluation kept in
    ``out/store.sqlite`` and a run folder written; a repeated call finds its finished
    evaluations and computes only the rest. ``settings``: any other ``RunConfig`` field (``limit``,
    ``params`` for the searcher, ``pruner_params``, ``runner``, ``workers``, ``device``, ...).
    Returns the ``RunOutcome`` (``.folder``, ``.picks``, ``.evaluations``)."""
    from paretobench.registry import DEFAULT_MODEL
    from paretobench.run_loop import RunConfig
    from paretobench.run_loop import run as run_search

    data = (data,) if isinstance(data, (str, Path)) else tuple(data)
    cfg = RunConfig(searcher=searcher, pruner=pruner, model=model or DEFAULT_MODEL, data=tuple(map(str, data)),
                    budgets=tuple(budgets), n=n, out=str(out), **settings)  # fmt: skip
    return run_search(cfg, progress=progress)


def frontier(folder, *, vs=None, bootstrap: int = 200) -> dict:
    """A run folder's frontier (``vs=None``), or its distance to a reference run's: IGD, IGD+,
    hypervolume ratio, Hausdorff, the gap at each budget, with bootstrap intervals."""
    from paretobench.results import compare, describe, load_run

    run = load_run(folder)
    return describe(run) if vs is None else compare(run, load_run(vs), bootstrap=bootstrap)


def report(name: str, results, *, out="results") -> dict:
    """The paper's tables and figures (``table1`` ... ``table5``, ``gap``, ``fig2``, ``fig3``,
    ``fig6``, ``fig7``, or ``all``) from the runs stored in ``results`` (one folder; one per model
    for ``table3`` and ``fig3-models``), written to ``out``; returns what was written."""
    from paretobench.tables import REPORTS, build

    folders = [results] if isinstance(results, (str, Path)) else list(results)
    if name != "all":
        return build(name, folders, out)
    # as `paretobench report all`: Table 4 only where benchmarks/hardware.py wrote its measurements
    timed = any(Path(out).glob("hardware-*.json"))
    return {n: build(n, folders, out) for n in REPORTS if timed or n != "table4"}
