"""Training VisPCO's ratio predictor (paper Algorithm 1); ``propose`` reads schedules off it.

Each step draws a batch of training questions (resampled so that their visual token counts are
uniform, appendix C.1.1) and one budget per question, uniform over that question's own range
(``budget_floors``); the predictor gives each question a keep curve for its budget; the relaxed
pruned forward (``searchers.vispco.relaxed``) runs the frozen VLM with those curves, and the loss is

    KL(student || teacher)  on the answer's first token  +  the augmented-Lagrangian term,

the teacher being the same model unpruned: the paper's Eq. 1, D_KL(softmax(pruned) ||
softmax(original)) (``kl="pruned-original"``; ``"original-pruned"`` is the other direction).
Every ``inner`` steps is one outer iteration of Algorithm 1: the multipliers and the penalty are
updated from the costs seen in it. Every
``val_every`` steps the predictor is scored on held-out questions (``Validation``) and the best
one is kept (``select``).

Hyper-parameters are the paper's (appendix C.1.4: lambda 100, alpha 2, beta 0.5, eps 0.01,
T 0.1, AdamW 4e-4, batch 16) except: sigma, the Gaussian width in token positions, is scaled
by the image's visual tokens (10 for 576 tokens, so 2.5 for the embedded model's 144), and the
step count is what a 2-core CPU trains in a few minutes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from searchers.vispco.config import TrainConfig
from searchers.vispco.kernels import kernel
from searchers.vispco.objective import AugmentedLagrangian, relaxed_fraction
from searchers.vispco.predictor import RatioPredictor, pooled_inputs
from searchers.vispco.relaxed import Relaxation, relaxed_prefill
from searchers.vispco.session import Session, equalised_weights, kl_to_teacher


@dataclass
class Trained:
    predictor: RatioPredictor
    config: TrainConfig
    sigma: float
    budget_range: tuple[float, float]
    log: list[dict] = field(default_factory=list)  # one entry per step
    outer: list[dict] = field(default_factory=list)  # one per outer iteration
    checkpoints: list[dict] = field(default_factory=list)  # {step, val_kl}: the held-out KL of the picks
    kept_step: int | None = None  # the checkpoint kept (None: the last, no validation)
    seconds: float = 0.0

    def summary(self) -> dict:
        last = self.log[-self.config.inner :] if self.log else []
        mean = lambda k: sum(e[k] for e in last) / len(last) if last else None  # noqa: E731
        return {"config": asdict(self.config), "sigma": self.sigma, "budget_range": list(self.budget_range),
                "seconds": self.seconds, "steps": len(self.log), "final_kl": mean("kl"),
                "final_violation": mean("violation"), "lam": self.outer[-1]["lam_after"] if self.outer else None,
                "w": self.outer[-1]["w"] if self.outer else None, "checkpoints": self.checkpoints,
                "kept_step": self.kept_step}  # fmt: skip



def train(session: Session, samples, cfg: TrainConfig, *, progress: bool = True, validate=None) -> Trained:
    """Algorithm 1 on ``samples``. ``validate(predictor) -> float`` (lower is better, e.g.
    ``Validation``) scores checkpoints for ``cfg.select``; without it the last step is kept."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    layers = session.shape.layers
    dim = session.model.config.get_text_config().hidden_size
    predictor = RatioPredictor(dim, layers, kernel(cfg.kernel, steps=cfg.multisteps), hidden=cfg.hidden)
    predictor.to(session.device)
    opt = torch.optim.AdamW(predictor.parameters(), lr=cfg.lr)
    n_text, n_visual = session.token_counts(samples)
    weights = equalised_weights(n_visual.tolist(), cfg.equalise_bins)
    lows = budget_floors(session.floors(n_text, n_visual), cfg)
    nv = int(n_visual.max())
    sigma = cfg.sigma if cfg.sigma is not None else max(1.0, 10.0 * nv / 576)
    relax = Relaxation(sigma=sigma, temperature=cfg.temperature, standardise=cfg.standardise)
    lo, hi = float(lows.min()), cfg.budget_hi
    al = AugmentedLagrangian(lam=cfg.lam, alpha=cfg.alpha, beta=cfg.beta, eps=cfg.eps, bins=cfg.bins, lo=lo, hi=hi,
                             constraint=cfg.constraint)  # fmt: skip
    idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=g).tolist()  # drawn either way
    if cfg.w_init == "kkt":
        al.w = [initial_multiplier(session, predictor, [samples[i] for i in idx], relax, lo, hi)] * cfg.bins
    else:
        al.w = [float(cfg.w_init)] * cfg.bins
    out = Trained(predictor, cfg, sigma, (lo, hi))
    bar = _bar(progress, cfg.steps)
    seen_b, seen_f = [], []
    t0 = time.perf_counter()
    best = _Checkpoints(out, validate if cfg.select == "best" else None)
    best.offer(0)
    try:
        for step in range(cfg.steps):
            idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=g).tolist()
            state, teacher, n_text, n_visual = session.batch([samples[i] for i in idx], cache=True)
            low = lows[idx]
            budget = low + (hi - low) * torch.rand(len(idx), generator=g)
            keep = predictor(pooled_inputs(state), budget.to(session.device))
            student = relaxed_prefill(session.engine, state, keep, session.pruner, relax)
            kl = kl_to_teacher(student.logits, teacher, cfg.kl).cpu()
            flops = relaxed_fraction(session.shape, keep.cpu(), n_text, n_visual, mode=session.mode,
                                     score=session.score)  # fmt: skip
            loss = kl.mean() + al.penalty(budget, flops).mean()
            opt.zero_grad()
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(predictor.parameters(), cfg.clip)
            opt.step()
            seen_b.append(budget), seen_f.append(flops.detach())
            entry = {"step": step + 1, "kl": float(kl.detach().mean()), "loss": float(loss.detach()),
                     "flops_minus_budget": float((flops.detach() - budget).mean()),
                     "violation": al.violation(budget, flops.detach()), "lam": al.lam, "w": float(sum(al.w) / len(al.w))}  # fmt: skip
            out.log.append(entry)
            if (step + 1) % cfg.inner == 0:
                out.outer.append({"step": step + 1, **al.update(torch.cat(seen_b), torch.cat(seen_f))})
                seen_b, seen_f = [], []
            if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
                best.offer(step + 1)
            bar.set_postfix(kl=f"{entry['kl']:.3f}", viol=f"{entry['violation']:.3f}", lam=f"{al.lam:g}",
                            w=f"{entry['w']:.2f}", **best.postfix(), refresh=False)  # fmt: skip
            bar.update(1)
    finally:
        bar.close()
    best.restore()
    out.seconds = time.perf_counter() - t0
    predictor.eval()
    return out


class _Checkpoints:
    """The predictor with the lowest validation score seen so far (a copy of its weights)."""

    def __init__(self, trained: Trained, validate):
        self.trained, self.validate = trained, validate
        self.score, self.state = float("inf"), None

    def offer(self, step: int) -> None:
        if self.validate is None:
            return
        p = self.trained.predictor
        p.eval()
        score = float(self.validate(p))
        p.train()
        self.trained.checkpoints.append({"step": step, "val_kl": score})
        if score < self.score:
            self.score, self.trained.kept_step = score, step
            self.state = {k: v.detach().clone() for k, v in p.state_dict().items()}

    def postfix(self) -> dict:
        return {} if self.trained.kept_step is None else {"best": f"{self.score:.3f}@{self.trained.kept_step}"}

    def restore(self) -> None:
        if self.state is not None:
            self.trained.predictor.load_state_dict(self.state)


def budget_floors(floors: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """(N,) the lowest budget each training question is drawn at: 0.02 over its own text-only
    cost (or ``cfg.budget_lo`` if that is higher). Budgets are drawn per question between this
    and ``cfg.budget_hi``: where the token count varies (native resolution) a small image's
    text-only cost can be 0.7 while a large one's is 0.1, and one range for all would either
    ask the impossible of small images or never train the predictor at low budgets."""
    lows = floors.double() + 0.02
    if cfg.budget_lo is not None:
        lows = lows.clamp(min=cfg.budget_lo)
    if not bool((lows < cfg.budget_hi).any()):
        raise ValueError(f"vispco: no training question can be pruned under budget_hi {cfg.budget_hi:g} "
                         f"(the lowest budget any of them reaches is {float(lows.min()):.3f})")  # fmt: skip
    return lows.clamp(max=cfg.budget_hi).float()


def initial_multiplier(session: Session, predictor, samples, relax: Relaxation, lo: float, hi: float) -> float:
    """``w_init="kkt"``: the ``w(1)`` that best balances the two gradients at the start,
    ``argmin_w |dKL/dkeep + w dF/dkeep|^2`` over a batch (the KKT condition of an active
    constraint), at least 0. It inherits the straight-through KL gradient's scale, which is far
    from the KL's true slope: measured, it came out under 1 or in the thousands (26,571 on
    tiny-qwen2.5-vl), and a multiplier in the thousands prices every FLOP so high that training
    drives costs far under their budgets; lambda = 10 lowers it by about 3 an outer iteration."""
    state, teacher, n_text, n_visual = session.batch(samples)
    budget = torch.full((len(samples),), (lo + hi) / 2, device=session.device)
    with torch.no_grad():
        keep = predictor(pooled_inputs(state), budget)
    keep.requires_grad_(True)
    out = relaxed_prefill(session.engine, state, keep, session.pruner, relax)
    (g_kl,) = torch.autograd.grad(kl_to_teacher(out.logits, teacher, session.kl).sum(), keep)
    flops = relaxed_fraction(session.shape, keep.cpu(), n_text, n_visual, mode=session.mode, score=session.score)
    (g_f,) = torch.autograd.grad(flops.sum(), keep)
    return max(0.0, float(-(g_kl * g_f).sum() / (g_f * g_f).sum().clamp_min(1e-30)))


def _bar(progress: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="vispco train", unit="step", disable=not progress, mininterval=1.0)


def save(trained: Trained, path) -> None:
    torch.save({"state_dict": trained.predictor.state_dict(), "summary": trained.summary(), "log": trained.log,
                "outer": trained.outer}, path)  # fmt: skip


def load(session: Session, path, cfg: TrainConfig) -> Trained | None:
    """The predictor saved at ``path`` if it was trained with ``cfg``; else None."""
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        return None
    summary = saved["summary"]
    if summary["config"] != asdict(cfg):
        return None
    layers = session.shape.layers
    dim = session.model.config.get_text_config().hidden_size
    predictor = RatioPredictor(dim, layers, kernel(cfg.kernel, steps=cfg.multisteps), hidden=cfg.hidden)
    predictor.load_state_dict(saved["state_dict"])
    predictor.to(session.device).eval()
    out = Trained(predictor, cfg, summary["sigma"], tuple(summary["budget_range"]), saved["log"], saved["outer"],
                  summary.get("checkpoints", []), summary.get("kept_step"), summary["seconds"])  # fmt: skip
    return out
