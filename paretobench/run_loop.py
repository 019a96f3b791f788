"""The run loop: a searcher asks, the store answers what it already knows, a runner evaluates
the rest, the store keeps each result the moment it arrives, the searcher is told.

A run is named by what determines its results (searcher and its settings, pruner, model, data,
budgets, n, seed), so running the same command again finds the same run: the searcher replays
deterministically, every finished evaluation comes back from the store, and only what was never
finished is computed. The run folder (``<out>/<run>/``) is rewritten from the store at the end.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from paretobench.evaluation import Evaluation, content_hash
from paretobench.evaluator import Evaluator, Workload
from paretobench.registry import DEFAULT_MODEL
from paretobench.scoring import SCORING_VERSION
from paretobench.store import Store

RUNNERS = ("local", "ray")


@dataclass
class RunConfig:
    searcher: str
    pruner: str = "fastv"
    model: str = DEFAULT_MODEL
    data: tuple[str, ...] = ("synth8",)
    limit: int | None = None  # first N questions of each file
    budgets: tuple[float, ...] = (0.3, 0.5, 0.7)
    n: int = 40  # evaluations the searcher may ask for
    seed: int = 0
    params: dict = field(default_factory=dict)  # the searcher's own keyword arguments
    pruner_params: dict = field(default_factory=dict)  # the pruner's keyword arguments (--pruner-param)
    max_new_tokens: int | None = None  # the greedy answer's length limit (None: what fits the data)
    out: str = "runs"  # results folder: store.sqlite + one folder per run
    name: str = ""  # default: searcher-pruner-<hash of what determines the results>
    runner: str = "local"
    workers: int = 1
    address: str | None = None  # an existing Ray cluster
    batch_size: int = 32
    chunk: int = 8  # schedules evaluated together (sharing image encodings) and stored together
    threads: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def identity(self) -> dict:
        """What determines the run's results (not where or how fast it runs; the precision does)."""
        out = {"searcher": self.searcher, "params": self.params, "pruner": self.pruner, "model": self.model,
               "data": list(self.data), "limit": self.limit, "budgets": list(self.budgets), "n": self.n,
               "seed": self.seed}  # fmt: skip
        if self.dtype != "float32":  # float32 runs keep the names they had before precision was a setting
            out["dtype"] = self.dtype
        if self.pruner_params:  # runs with the pruner's defaults keep the names they had before
            out["pruner_params"] = self.pruner_params
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        return out

    def run_name(self, resolved: dict | None = None) -> str:
        """``name``, or searcher-pruner-<hash of the identity and the searcher's ``resolved``
        settings (``Searcher.identity``), when it has any>."""
        identity = {**self.identity(), "resolved": resolved} if resolved else self.identity()
        return self.name or f"{self.searcher}-{self.pruner}-{content_hash(identity)[:8]}"


@dataclass
class RunOutcome:
    name: str
    folder: Path
    evaluations: list[Evaluation]  # distinct, in the order first asked
    picks: dict
    computed: int  # evaluated by this invocation
    reused: int  # found in the store
    seconds: float


def check(cfg: RunConfig) -> None:
    """Fail fast, before anything loads, on what is wrong with the command line."""
    from paretobench.registry import SEARCHERS, build_pruner

    searcher = SEARCHERS.get(cfg.searcher)
    searcher.check_settings(cfg.params)
    # unknown names and parameters, and a pruner the searcher cannot use, fail before anything loads
    pruner = build_pruner(cfg.pruner, cfg.pruner_params)
    if getattr(pruner, "chooses_counts", False):
        raise ValueError(f"{cfg.pruner} with {pruner.params()} chooses its own token counts; a search costs "
                         "schedules by theirs (evaluate it with paretobench eval --preset or --schedule)")  # fmt: skip
    searcher.check_pruner(pruner)
    if cfg.max_new_tokens is not None and cfg.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    if cfg.runner not in RUNNERS:
        raise ValueError(f"unknown runner {cfg.runner!r}; valid: {', '.join(RUNNERS)}")
    if cfg.workers < 1 or cfg.chunk < 1 or cfg.n < 1:
        raise ValueError("--workers, --chunk and --n must be >= 1")


def make_runner(cfg: RunConfig, evaluator: Evaluator):
    from paretobench.runners import LocalRunner, RayRunner

    if cfg.runner == "ray":
        return RayRunner(evaluator.workload, workers=cfg.workers, address=cfg.address)
    return LocalRunner(evaluator)


def run(cfg: RunConfig, *, progress: bool = True) -> RunOutcome:
    from paretobench.registry import SEARCHERS

    check(cfg)
    t0 = time.perf_counter()
    workload = Workload(model=cfg.model, data=tuple(cfg.data), limit=cfg.limit, pruner=cfg.pruner,
                        pruner_params=tuple(sorted(cfg.pruner_params.items())), batch_size=cfg.batch_size,
                        threads=cfg.threads, device=cfg.device, dtype=cfg.dtype,
                        max_new_tokens=cfg.max_new_tokens)  # fmt: skip
    evaluator = Evaluator(workload)
    evaluator.data_key  # read and validate the data before the store is touched
    # budgets out of reach, and a Ray cluster that cannot place --workers, fail before the store is touched too
    searcher = SEARCHERS.get(cfg.searcher)(evaluator.space, n=cfg.n, budgets=cfg.budgets, seed=cfg.seed,
                                            **cfg.params)  # fmt: skip
    with (
        closing(make_runner(cfg, evaluator)) as runner,
        closing(Store(cfg.out, model=evaluator.model_key, model_name=cfg.model)) as store,
    ):
        store.put_dataset(evaluator.data_key, "+".join(d.name for d in evaluator.datasets), evaluator.groups)
        resolved = searcher.identity()
        name = cfg.run_name(resolved)
        # the scoring rules' version, the pruner's algorithm version and the generation length the
        # data gave are recorded with the run but left out of its name: a run evaluated under other
        # ones is refused on resumption (its evaluations' keys differ), never mixed or renamed
        record = {**cfg.identity(), **({"resolved": resolved} if resolved else {}), "scoring": SCORING_VERSION,
                  "pruner_config": evaluator.pruner.config(), "max_new_tokens_used": evaluator.max_new_tokens}  # fmt: skip
        store.begin_run(name, record)
        if searcher.needs_model:  # it learns where the model is: in this process, or on a Ray actor
            searcher.prepare(evaluator, Path(cfg.out) / name, progress=progress, runner=runner)
        seq, computed, reused, seen = 0, 0, 0, set()
        with closing(_bar(progress, cfg.n, name)) as bar:
            while schedules := searcher.ask():
                keys = [evaluator.key(s) for s in schedules]
                store.add_items(name, seq, keys)
                seq += len(keys)
                have = store.get_many(keys)
                todo = list({k: s for k, s in zip(keys, schedules) if k not in have}.values())
                reused += sum(1 for k in dict.fromkeys(keys) if k in have and k not in seen)
                bar.update(len(keys) - len(todo))  # found in the store: counted before the rest is computed
                if todo:
                    chunks = [(i, todo[i : i + cfg.chunk]) for i in range(0, len(todo), cfg.chunk)]
                    for _, evaluations in runner.run(chunks):
                        for ev in evaluations:
                            store.put(ev)
                        # what the store kept: another process writing this store may have kept its own first
                        have.update(store.get_many([ev.key for ev in evaluations]))
                        computed += len(evaluations)
                        bar.update(len(evaluations))
                seen.update(keys)
                searcher.tell(schedules, [have[k] for k in keys])
        store.finish_run(name)
        order = list(dict.fromkeys(store.run_keys(name)))  # distinct, in the order first asked
        stored = store.get_many(order)
        evaluations = [stored[k] for k in order]
        picks = searcher.picks(evaluations)
        folder = Path(cfg.out) / name
        outcome = RunOutcome(name, folder, evaluations, picks, computed, reused, time.perf_counter() - t0)
        write_run_folder(outcome, cfg, evaluator, searcher)
        return outcome


def _bar(progress: bool, total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="eval", disable=not progress, mininterval=1.0)


# ----------------------------------------------------------------------------- run folder
def evaluations_table(outcome: RunOutcome, groups: list[str]):
    """One row per distinct evaluation, in the order first asked; frontier and pick flags."""
    import pandas as pd

    from paretobench.pareto import frontier_mask, points

    evs = outcome.evaluations
    on_front = frontier_mask(points([e.flops_fraction for e in evs], [e.accuracy for e in evs]))
    pick_of = {}
    for b, e in outcome.picks.items():
        if e is not None:
            pick_of.setdefault(e.key, []).append(f"{b:g}")
    rows = []
    for i, (e, front) in enumerate(zip(evs, on_front)):
        rows.append({
            "order": i, "key": e.key, "schedule": ",".join(f"{k:g}" for k in e.schedule),
            "flops_fraction": e.flops_fraction, "accuracy": e.accuracy, "overall": e.overall,
            "flops": e.flops, "unpruned_flops": e.unpruned_flops,
            **{f"acc_{c}": a for c, a in e.per_category.items()},
            "seconds": e.seconds, "on_frontier": bool(front), "pick_for": " ".join(pick_of.get(e.key, [])),
        })  # fmt: skip
    return pd.DataFrame(rows)


def write_run_folder(outcome: RunOutcome, cfg: RunConfig, evaluator: Evaluator, searcher) -> None:
    from paretobench.plots import frontier_plot

    folder = outcome.folder
    folder.mkdir(parents=True, exist_ok=True)
    space = evaluator.space
    config = {
        **asdict(cfg), "run": outcome.name, "searcher_params": searcher.params(),
        "model_fingerprint": evaluator.model_key, "data_key": evaluator.data_key,
        "samples": len(evaluator.samples), "pruner_config": evaluator.pruner.config(),
        "space": {"layers": space.layers, "n_text": space.n_text, "n_visual": space.n_visual, "mode": space.mode},
    }  # fmt: skip
    write_json(folder / "config.json", config)
    table = evaluations_table(outcome, evaluator.groups)
    write_file(folder / "evaluations.csv", lambda f: table.to_csv(f, index=False))
    write_file(folder / "evaluations.parquet", lambda f: table.to_parquet(f, index=False))
    front = table[table.on_frontier].sort_values(["flops_fraction", "accuracy"])
    write_file(folder / "frontier.csv", lambda f: front.to_csv(f, index=False))
    title = f"{cfg.searcher} / {cfg.pruner} on {cfg.model}"
    write_file(folder / "frontier.png", lambda f: frontier_plot(table, f, title=title))
    summary = {
        "run": outcome.name, "searcher": cfg.searcher, "pruner": cfg.pruner, "model": cfg.model,
        "data": list(cfg.data), "evaluations": len(table), "frontier_points": int(table.on_frontier.sum()),
        "computed": outcome.computed, "reused": outcome.reused, "seconds": outcome.seconds,
        "picks": {f"{b:g}": None if e is None else {"schedule": e.schedule, "flops_fraction": e.flops_fraction,
                                                   "accuracy": e.accuracy, "key": e.key}
                  for b, e in outcome.picks.items()},
        "searcher_report": searcher.report(outcome.evaluations),
    }  # fmt: skip
    path = folder / "summary.json"
    if outcome.computed == 0 and path.is_file():
        # a rerun that computed nothing keeps the account of the run that did the work, so a
        # results folder rebuilt from its store differs from the committed one only where the
        # results do (the rerun's own counts are in ``outcome``)
        before = json.loads(path.read_text())
        summary.update({k: before[k] for k in ("computed", "reused", "seconds") if k in before})
        report, kept = summary["searcher_report"], before.get("searcher_report") or {}
        report.update({k: kept[k] for k in searcher.account if k in kept and k in report})
    write_json(path, summary)


def write_file(path: Path, write) -> None:
    """``write(file)`` to a file of this process's own, then renamed onto ``path``: a reader, or
    another process writing the same run folder at once, never sees a half-written file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    write(tmp)
    tmp.replace(path)


def write_json(path: Path, obj) -> None:
    write_file(path, lambda f: f.write_text(json.dumps(obj, indent=2, default=str) + "\n"))
