"""Reading schedules off a trained predictor: per budget its mean curve in whole tokens and the
same shape scaled to fill the budget (``propose``), and the score a checkpoint is kept by
(``Validation``: its picks pruned physically on held-out questions, KL to the unpruned model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from paretobench.schedule import PruningSchedule, keep_count
from searchers.vispco.objective import relaxed_fraction
from searchers.vispco.predictor import pooled_inputs
from searchers.vispco.relaxed import Relaxation, relaxed_prefill
from searchers.vispco.session import Session, kl_to_teacher
from searchers.vispco.train import Trained


@dataclass
class Proposal:
    budget: float
    schedule: PruningSchedule  # whole visual tokens, within the budget by the analytic count
    filled: PruningSchedule  # the same curve's shape (from 1 at its first layer) scaled to fill the budget
    mean_keep: list[float]  # the predictor's curve averaged over the probe questions
    relaxed_flops: float  # mean relaxed cost of the per-question curves (what training saw)
    relaxed_kl: float  # mean KL of the relaxed forward under the per-question curves
    realised_kl: float  # mean KL of the physically pruned forward under ``schedule``
    kernel_params: dict[str, float]  # mean over the probe questions

    def record(self) -> dict:
        d = asdict(self)
        d["schedule"], d["filled"] = list(self.schedule.keep), list(self.filled.keep)
        return d

    @classmethod
    def from_record(cls, d: dict) -> Proposal:
        """The proposal ``record`` wrote (extra keys, such as a report's realised accuracy, are ignored)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        return cls(**{**d, "schedule": PruningSchedule(tuple(d["schedule"])),
                      "filled": PruningSchedule(tuple(d["filled"]))})  # fmt: skip


def filled_schedule(space, curve, budget: float) -> PruningSchedule:
    """A mean keep curve's shape (from 1 at its first layer) scaled to fill ``budget``."""
    top = max(float(curve[0]), 1e-6)
    return space.scaled([float(k) / top for k in curve], budget)


def whole_schedule(space, curve, budget: float) -> PruningSchedule:
    """A mean keep curve in whole visual tokens, scaled down (``SearchSpace.scaled``) only if
    rounding took it over ``budget`` by the analytic count the evaluator's FLOPs follow."""
    nv = space.n_visual
    schedule = PruningSchedule(tuple(keep_count(float(k), nv) / nv for k in curve))
    return space.scaled(schedule.keep, budget) if space.fraction(schedule) > budget else schedule


def pick_schedule(space, curve, budget: float, fill: bool = True) -> PruningSchedule:
    """The schedule the searcher picks for ``budget`` off a mean curve: the filled one, or with
    ``fill=False`` the curve itself in whole tokens (what the predictor gives, as in the paper)."""
    return filled_schedule(space, curve, budget) if fill else whole_schedule(space, curve, budget)


class Validation:
    """Scores a predictor as the searcher will use it: per budget, the pick of its mean curve
    over held-out questions (``pick_schedule``: filled unless ``fill=False``), pruned physically;
    the mean KL to the unpruned model. The questions are encoded and the teacher run once."""

    def __init__(self, session: Session, samples, budgets, space, fill: bool = True):
        self.session, self.space, self.fill = session, space, bool(fill)
        self.budgets = [float(b) for b in budgets if b >= space.floor + 1e-9]
        if not self.budgets:
            raise ValueError(f"vispco: no validation budget is above the cheapest cost {space.floor:.3f}")
        self.state, self.teacher, _, _ = session.batch(samples)
        self.pooled = pooled_inputs(self.state)

    @torch.no_grad()
    def __call__(self, predictor) -> float:
        s, total = self.session, 0.0
        for b in self.budgets:
            budget = torch.full((self.pooled.shape[0],), b, device=s.device)
            curve = predictor(self.pooled, budget).mean(0).tolist()
            pick = pick_schedule(self.space, curve, b, self.fill)
            total += float(kl_to_teacher(s.engine.prefill(self.state, pick, s.pruner).logits, self.teacher, s.kl).mean())
        return total / len(self.budgets)


@torch.no_grad()
def propose(session: Session, trained: Trained, probe, budgets, space) -> list[Proposal]:
    """Per budget: the predictor's keep curves for the probe questions, averaged into one
    schedule in whole tokens; scaled down (``SearchSpace.scaled``) if rounding took it over
    the budget by the analytic count that the evaluator's FLOPs follow. Also the curve's shape
    scaled to fill the budget (``filled``): the trained predictor tends to stay under its
    budgets (see the relaxed-vs-realised report), and a shape is what it learns best."""
    state, teacher, n_text, n_visual = session.batch(probe)
    pooled = pooled_inputs(state)
    relax = Relaxation(sigma=trained.sigma, temperature=trained.config.temperature,
                       standardise=trained.config.standardise)
    out = []
    for b in budgets:
        budget = torch.full((len(probe),), float(b), device=session.device)
        keep = trained.predictor(pooled, budget)
        params = {k: float(v.mean()) for k, v in trained.predictor.kernel_params(pooled, budget).items()}
        relaxed = relaxed_prefill(session.engine, state, keep, session.pruner, relax)
        flops = relaxed_fraction(session.shape, keep.cpu(), n_text, n_visual, mode=session.mode,
                                 score=session.score)  # fmt: skip
        mean = keep.mean(0).tolist()
        schedule, filled = whole_schedule(space, mean, b), filled_schedule(space, mean, b)
        hard = session.engine.prefill(state, schedule, session.pruner)
        out.append(Proposal(
            budget=float(b), schedule=schedule, filled=filled, mean_keep=mean, relaxed_flops=float(flops.mean()),
            relaxed_kl=float(kl_to_teacher(relaxed.logits, teacher, session.kl).mean()),
            realised_kl=float(kl_to_teacher(hard.logits, teacher, session.kl).mean()), kernel_params=params,
        ))  # fmt: skip
    return out
