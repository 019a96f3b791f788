"""``vispco``: the VisPCO paper's gradient search. Instead of evaluating many schedules, it
trains a ratio predictor (input, budget) -> keep curve by gradient descent through a relaxed,
differentiable pruned forward of the model itself, then proposes one schedule per budget of a
sweep (0.1 .. 0.9 and the run's budgets); each is evaluated like any other searcher's, pruned
physically, so the predicted frontier is measured, not assumed.

Unlike the black-box searchers it needs the model: the run loop calls ``prepare`` once before
the first ``ask``, which trains the predictor (or loads the one this run saved before,
``vispco-predictor.pt`` in the run folder, when its settings match) and reads the schedules
off it: per budget, the predictor's mean curve in whole tokens (``schedule``) and the same
shape scaled to fill the budget (``filled``, the pick unless ``fill=False``). What was read
off a predictor is saved with it (``vispco-proposals.json``) and a loaded predictor's
proposals are those, not read again: rounding a curve to whole tokens can turn on the last
bit of a float, which another machine's kernels or thread count change, and a resumed run
must ask for the schedules it asked for before. Of the predictors
seen during training, the one kept is the one whose picks, pruned physically on the held-out
questions, stay closest to the unpruned model (``select=best``). The run's
``summary.json`` holds the training summary and, per budget, the relaxed cost and KL next to
the realised ones.

The machinery: ``kernels`` (the paper's five keep curves and a free per-layer mode),
``predictor`` (FiLM-conditioned MLP), ``objective`` (relaxed FLOPs, augmented Lagrangian),
``train`` (Algorithm 1, proposals). This module imports none of them until it is used.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from paretobench.registry import SEARCHERS
from searchers.base import Searcher

# the searcher's default: the one kernel here that can keep a middle share through the early
# layers and cut deep later, the shape the embedded models' best 50% schedules have and that
# VisPCO's own objective prefers at fixed curves (docs/notes/vispco-training.md); the paper's
# default is ``multistep``
DEFAULT_KERNEL = "ledge"
PREDICTOR_FILE = "vispco-predictor.pt"
PROPOSALS_FILE = "vispco-proposals.json"
SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# ``--param preset=paper``: the paper's configuration for single-layer pruning (Sec. 4.1 and
# appendix C.1.4: p-sigmoid kernel, lambda 100, alpha 2, beta 0.5, eps 0.01, T 0.1, AdamW 4e-4,
# batch 16, Eq. 1's KL, the last predictor kept) as far as the embedded model allows: sigma is
# scaled by the visual tokens (10 for 576), training runs 3 epochs of the training questions as
# the official code's 3 epochs (180 steps of 16 on synth8-train), and each question draws its
# budgets over its own feasible range (the official code cycles 0.01-0.95, under the text-only
# floor of most questions here). Its pick is the predictor's curve itself (fill=False): the
# official code prunes at the ratios the predictor gives. Any setting given explicitly still wins.
PRESETS = {
    "paper": dict(kernel="psigmoid", steps=180, lr=4e-4, lam=100.0, alpha=2.0, beta=0.5, eps=0.01, temperature=0.1,
                  batch_size=16, kl="pruned-original", select="last", fill=False),
}  # fmt: skip


@SEARCHERS.register("vispco", doc="VisPCO: a ratio predictor trained by gradient through a relaxed forward")
class VisPCO(Searcher):
    name = "vispco"
    needs_model = True
    account = ("predictor_loaded",)

    def __init__(self, space, *, kernel: str | None = None, steps: int | None = None, train: str = "synth8-train",
                 train_limit: int | None = None, probe: int = 64, sweep=SWEEP, fill: bool | None = None, preset: str = "",
                 **kw):  # fmt: skip
        from searchers.vispco.config import TrainConfig

        if preset and preset not in PRESETS:
            raise ValueError(f"vispco: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        hyper = {f.name for f in fields(TrainConfig)} - {"kernel", "steps", "seed"}
        settings = {k: kw.pop(k) for k in list(kw) if k in hyper}
        super().__init__(space, **kw)
        base = dict(PRESETS.get(preset, {}))
        kernel = kernel if kernel is not None else base.pop("kernel", TrainConfig.kernel)
        steps = steps if steps is not None else base.pop("steps", TrainConfig.steps)
        fill = fill if fill is not None else base.pop("fill", True)
        base.pop("kernel", None), base.pop("steps", None), base.pop("fill", None)
        self.preset = preset
        self.config = TrainConfig(kernel=kernel, steps=steps, seed=self.seed, **{**base, **settings})
        if probe < 1:
            raise ValueError(f"vispco: probe must be >= 1, got {probe}")
        self.train_data, self.train_limit, self.probe, self.fill = train, train_limit, int(probe), bool(fill)
        feasible = self.space.floor + 1e-9
        self.sweep = sorted({round(float(b), 6) for b in (*sweep, *self.budgets) if b >= feasible})
        self.below_floor = sorted(float(b) for b in sweep if b < feasible)
        self.trained, self.loaded = None, False
        self.proposals: list = []

    @classmethod
    def check_pruner(cls, pruner) -> None:
        """The relaxed forward ranks tokens by a pruner's ``scores`` and masks the ones under a
        soft threshold: a pruner that chooses tokens another way (its own ``select``: ViTCoP's
        clusters, ``spatial``'s spacing) or adds tokens (SparseVLM's recycling) has no relaxation
        that computes what it does, so it is refused rather than trained as something else."""
        from pruners.base import Pruner

        if type(pruner).select is not Pruner.select and not pruner.relaxes_as_ranking:
            raise ValueError(f"vispco trains through a relaxed forward that ranks tokens by a pruner's scores; "
                             f"{pruner.name} chooses its tokens otherwise, which that forward cannot relax "
                             "(use fastv, pyramiddrop, fitprune, random, or sparsevlm with recycle=0)")  # fmt: skip
        if pruner.score_cost().recycle:
            raise ValueError(f"vispco: {pruner.name} adds recycled tokens back after a step, which the relaxed "
                             "(masked) forward cannot; give --pruner-param recycle=0 to search its ranking alone")  # fmt: skip

    @classmethod
    def settings(cls):
        from searchers.vispco.config import TrainConfig

        return super().settings() | {f.name for f in fields(TrainConfig)} - {"seed"}

    def params(self):
        return {"preset": self.preset, "kernel": self.config.kernel, "steps": self.config.steps, "fill": self.fill, "train": self.train_data,
                "train_limit": self.train_limit, "probe": self.probe, "sweep": self.sweep,
                "below_floor": self.below_floor, "train_config": _plain(self.config)}  # fmt: skip

    def identity(self):
        return {"train_config": _plain(self.config), "train": self.train_data, "train_limit": self.train_limit,
                "probe": self.probe, "sweep": self.sweep, "fill": self.fill}  # fmt: skip

    # ------------------------------------------------------------------ learning phase
    def prepare(self, evaluator, folder: Path, *, progress: bool = True, runner=None) -> None:
        """Train the predictor on the model (or load this run's saved one) and propose. The
        model is ``runner``'s (``paretobench.runners``): under Ray the training runs on one
        actor, on its GPU when it has one; without a runner, in this process. The questions are
        read and the predictor is saved here, in the run folder."""
        from paretobench.data.datasets import load_dataset
        from paretobench.runners import LocalRunner

        _check_train_split(self.train_data, [d.name for d in evaluator.datasets])
        samples = load_dataset(self.train_data, limit=self.train_limit).samples
        if len(samples) <= self.probe:
            raise ValueError(f"vispco: {self.train_data} has {len(samples)} questions; training needs more "
                             f"than the {self.probe} held out to read schedules off the predictor")  # fmt: skip
        path = Path(folder) / PREDICTOR_FILE
        saved = path.read_bytes() if path.is_file() else None
        read_before = _saved_proposals(Path(folder), self.sweep) if saved is not None else None
        runner = runner or LocalRunner(evaluator)
        self.trained, proposals, trained_now = runner.call(_learn, self.config, samples, self.probe, self.sweep,
                                                           self.space, saved, progress, self.fill,
                                                           read_before)  # fmt: skip
        self.loaded = trained_now is None  # the time it took is then not in this command's
        from searchers.vispco.propose import Proposal

        self.proposals = [Proposal.from_record(p) for p in proposals]
        from paretobench.run_loop import write_file, write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        if trained_now is not None:
            write_file(path, lambda f: f.write_bytes(trained_now))
        if trained_now is not None or not path.with_name(PROPOSALS_FILE).is_file():
            write_json(path.with_name(PROPOSALS_FILE), [p.record() for p in self.proposals])

    # ------------------------------------------------------------------ ask / tell
    def ask(self):
        if self.trained is None:
            raise RuntimeError("vispco learns from the model: call prepare(evaluator, folder) before ask "
                               "(paretobench.run_loop.run does)")  # fmt: skip
        if self.asked:
            return []
        schedules = [p.schedule for p in self.proposals] + ([p.filled for p in self.proposals] if self.fill else [])
        return self._take(list({s.keep: s for s in schedules}.values()))

    def _chosen(self, p):
        return p.filled if self.fill else p.schedule

    def picks(self, results):
        """Per budget, the evaluation of the schedule proposed for it (filled, unless fill=False)."""
        by_keep = {tuple(r.schedule): r for r in results}
        mine = {p.budget: by_keep.get(self._chosen(p).keep) for p in self.proposals}
        return {b: mine.get(round(b, 6)) for b in self.budgets}

    def report(self, results) -> dict:
        """Training summary; per budget the relaxed cost and KL next to the realised ones."""
        by_keep = {tuple(r.schedule): r for r in results}
        rows = []
        for p in self.proposals:
            r, f = by_keep.get(p.schedule.keep), by_keep.get(p.filled.keep)
            rows.append({**p.record(), "realised_flops": None if r is None else r.flops_fraction,
                         "accuracy": None if r is None else r.accuracy,
                         "filled_flops": None if f is None else f.flops_fraction,
                         "filled_accuracy": None if f is None else f.accuracy,
                         "flops_gap": None if r is None else r.flops_fraction - p.relaxed_flops,
                         "kl_gap": p.realised_kl - p.relaxed_kl})  # fmt: skip
        return {"training": None if self.trained is None else self.trained.summary(), "fill": self.fill,
                "predictor_loaded": self.loaded,
                "proposals": rows, "below_floor": self.below_floor}  # fmt: skip


def _learn(evaluator, config, samples, probe: int, sweep, space, saved: bytes | None, progress: bool,
           fill: bool = True, read_before: list[dict] | None = None):  # fmt: skip
    """Runs where the model is (``Runner.call``). The predictor: the one saved before (``saved``,
    its file's bytes) if it was trained with ``config``, else one trained on ``samples`` but the
    last ``probe``, held out (checkpoints are scored by the picks ``fill`` chooses, and the
    proposals read, on those). The proposals: ``read_before`` (the records read off the saved
    predictor when it was saved) if that predictor is the one used, else read off it now. Returns
    (trained, proposal records, the new predictor file's bytes, None when it was loaded), the
    predictor moved to the CPU, so that a driver without the actor's GPU can take it."""
    import io

    from searchers.vispco import propose as P
    from searchers.vispco import session as S
    from searchers.vispco import train as T

    m = evaluator.loaded
    session = S.Session(m.model, m.processor, evaluator.pruner, mode=space.mode, kl=config.kl)
    train_set, held_out = samples[:-probe], samples[-probe:]
    trained = T.load(session, io.BytesIO(saved), config) if saved is not None else None
    trained_now = None
    if trained is None:
        validate = P.Validation(session, held_out, config.val_budgets, space, fill)
        trained = T.train(session, train_set, config, progress=progress, validate=validate)
        buffer = io.BytesIO()
        T.save(trained, buffer)
        trained_now = buffer.getvalue()
    if trained_now is None and read_before is not None:
        proposals = read_before
    else:
        proposals = [p.record() for p in P.propose(session, trained, held_out, sweep, space)]
    trained.predictor.cpu()
    return trained, proposals, trained_now


def _saved_proposals(folder: Path, sweep) -> list[dict] | None:
    """The proposals read off this run folder's predictor when it was saved: its
    ``vispco-proposals.json``, or for a run saved before that file existed, the ones its
    ``summary.json`` reports; None when neither covers ``sweep``."""
    found = None
    if (folder / PROPOSALS_FILE).is_file():
        found = json.loads((folder / PROPOSALS_FILE).read_text())
    elif (folder / "summary.json").is_file():
        found = (json.loads((folder / "summary.json").read_text()).get("searcher_report") or {}).get("proposals")
    if not found or [round(float(p["budget"]), 6) for p in found] != list(sweep):
        return None
    return found


def _plain(obj) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(obj)))


def _check_train_split(train: str, evaluated: list[str]) -> None:
    """Refuse to train on one dataset's train split and evaluate on another whose own train split
    exists (e.g. synth8-train's 96-pixel images for a native-resolution run on synth8-native)."""
    from paretobench.registry import DATASETS

    own = [f"{name}-train" for name in evaluated if f"{name}-train" in DATASETS]
    if own and train not in own:
        raise ValueError(f"vispco: training on {train} but evaluating on {', '.join(evaluated)}; "
                         f"give --param train={own[0]}")

