"""Training VisPCO's ratio predictor (paper Algorithm 1) and reading schedules off it.

Each step draws a batch of training questions (resampled so that their visual token counts are
uniform, appendix C.1.1) and one budget per question, uniform over that question's own range
(``budget_floors``); the predictor gives each question a keep curve for its budget; the relaxed
pruned forward (``searchers.vispco.relaxed``) runs the frozen VLM with those curves, and the loss is

    KL(student || teacher)  on the answer's first token  +  the augmented-Lagrangian term,

the teacher being the same model unpruned: the paper's Eq. 1, D_KL(softmax(pruned) ||
softmax(original)) (``kl="pruned-original"``; ``"original-pruned"`` is the other direction). Every ``inner`` steps is one outer iteration of
Algorithm 1: the multipliers and the penalty are updated from the costs seen in it. Every
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

from paretobench.adapters import adapter_for, token_counts
from paretobench.engine import Engine
from paretobench.sequence import SeqState
from paretobench.flops import DecoderShape
from searchers.vispco.relaxed import Relaxation, relaxed_prefill
from paretobench.schedule import PruningSchedule, keep_count
from searchers.vispco import DEFAULT_KERNEL
from searchers.vispco.kernels import kernel
from searchers.vispco.objective import AugmentedLagrangian, relaxed_fraction
from searchers.vispco.predictor import RatioPredictor, pooled_inputs


@dataclass(frozen=True)
class TrainConfig:
    kernel: str = DEFAULT_KERNEL  # psigmoid, exponential, linear, gentle, multistep, free, ledge
    kl: str = "pruned-original"  # the divergence's direction: the paper's Eq. 1, or "original-pruned"
    steps: int = 240
    batch_size: int = 16
    lr: float = 5e-3  # the paper's 4e-4 moves the predictor too little in a few hundred steps
    lam: float = 10.0  # paper: 100 (LLaVA, Qwen), 1 (Gemma3); 100 overshot budgets here (measured)
    alpha: float = 2.0
    beta: float = 0.5
    eps: float = 0.01
    sigma: float | None = None  # None: 10 * Nv / 576
    temperature: float = 0.1
    standardise: bool = False  # rank on per-row standardised scores (see searchers.vispco.relaxed)
    clip: float = 1.0  # gradient norm clipping of the predictor's update (0: none)
    inner: int = 20  # steps per outer iteration of Algorithm 1
    budget_lo: float | None = None  # None: each question's own text-only floor + 0.02
    budget_hi: float = 0.95
    bins: int = 4  # budget bins, one multiplier each
    constraint: str = "inequality"  # F <= B (paper) or F = B (see objective.py)
    multisteps: int = 3  # M of the multi-step kernel
    hidden: int = 64
    seed: int = 0
    equalise_bins: int = 10  # token-count bins of the resampling
    # checkpoint selection: every ``val_every`` steps (and before the first) the predictor's
    # picks at ``val_budgets`` are pruned physically on the held-out questions, and the
    # predictor whose picks have the lowest mean KL to the unpruned model is the one kept
    # ("last": keep the final one). The straight-through gradient's direction is noisy
    # (docs/notes/vispco-training.md), so the descent can walk away from better curves it passed
    select: str = "best"
    val_every: int = 40
    val_budgets: tuple[float, ...] = (0.3, 0.5, 0.7)

    def __post_init__(self):
        kernel(self.kernel, steps=self.multisteps)  # raises on an unknown name
        if self.kl not in KL_DIRECTIONS:
            raise ValueError(f"vispco: kl must be one of {', '.join(KL_DIRECTIONS)}, got {self.kl!r}")
        for name in ("steps", "batch_size", "inner", "bins", "multisteps", "hidden", "equalise_bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"vispco: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.budget_hi <= 1:
            raise ValueError(f"vispco: budget_hi must be in (0, 1], got {self.budget_hi}")
        if self.select not in ("best", "last"):
            raise ValueError(f"vispco: select must be 'best' or 'last', got {self.select!r}")
        if int(self.val_every) < 1:
            raise ValueError(f"vispco: val_every must be >= 1, got {self.val_every}")
        budgets = (self.val_budgets,) if isinstance(self.val_budgets, (int, float)) else self.val_budgets
        object.__setattr__(self, "val_budgets", tuple(float(b) for b in budgets))
        if not self.val_budgets or not all(0 < b <= 1 for b in self.val_budgets):
            raise ValueError(f"vispco: val_budgets must be fractions in (0, 1], got {self.val_budgets}")


def equalised_weights(counts, bins: int = 10) -> torch.Tensor:
    """Sampling weights that make ``counts`` (e.g. visual tokens per image) uniform over
    ``bins`` equal-width bins of their range: each bin gets the same total weight, shared
    equally by its members (over-sampling rare sizes, under-sampling common ones)."""
    c = torch.as_tensor(list(counts), dtype=torch.float64)
    lo, hi = float(c.min()), float(c.max())
    if hi <= lo:
        return torch.full_like(c, 1.0 / len(c))
    idx = ((c - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
    members = torch.bincount(idx, minlength=bins).double()
    w = 1.0 / members[idx]
    return w / w.sum()


KL_DIRECTIONS = ("pruned-original", "original-pruned")


def kl_to_teacher(student: torch.Tensor, teacher: torch.Tensor, direction: str = "pruned-original") -> torch.Tensor:
    """(B,) the KL divergence between next-token distributions given as logits (B, V):
    KL(student || teacher) (the paper's Eq. 1, the pruned model's distribution first), or with
    ``direction="original-pruned"`` KL(teacher || student)."""
    t = teacher.float().log_softmax(-1)
    s = student.float().log_softmax(-1)
    first, second = (s, t) if direction == "pruned-original" else (t, s)
    return torch.nn.functional.kl_div(second, first, log_target=True, reduction="none").sum(-1)


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


class Session:
    """A frozen VLM, its pruner and the training questions: what training and probing share."""

    def __init__(self, model, processor, pruner, *, mode: str = "total", kl: str = "pruned-original"):
        self.model, self.processor, self.pruner, self.mode, self.kl = model, processor, pruner, mode, kl
        self.adapter = adapter_for(model, processor)
        self.engine = Engine(self.adapter)
        self.shape = DecoderShape.from_config(model.config.get_text_config())
        self.score = pruner.score_cost()
        self.device = model.device  # the predictor trains where the model runs
        self._rows: dict = {}  # training cache: sample index -> (its single-row state, teacher logits)
        model.eval().requires_grad_(False)

    def batch(self, samples, *, cache: bool = False):
        """A batch's layer-0 state, the unpruned model's logits (the teacher) and token counts.
        With ``cache``, each sample is encoded and run unpruned once per session: training draws
        every question several times, and the frozen model gives it the same state each time."""
        if cache:
            state, teacher = self._cached(samples)
        else:
            with torch.no_grad():
                state = self.adapter.prepare(self.adapter.encode(samples), keys=[s.index for s in samples])
                teacher = self.engine.prefill(state).logits
        # token counts, budgets and the relaxed cost stay on the CPU (a few numbers per row)
        n_visual = torch.tensor(state.n_visual)
        n_text = state.valid.sum(1).cpu() - n_visual
        return state, teacher, n_text, n_visual

    @torch.no_grad()
    def _cached(self, samples):
        rows = self._rows
        new = list({s.index: s for s in samples if s.index not in rows}.values())
        if new:
            state = self.adapter.prepare(self.adapter.encode(new), keys=[s.index for s in new])
            teacher = self.engine.prefill(state).logits
            for s, row, t in zip(new, state.rows(), teacher):
                rows[s.index] = (row, t)
        picked = [rows[s.index] for s in samples]
        return SeqState.stack([r for r, _ in picked]), torch.stack([t for _, t in picked])

    def token_counts(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) text and visual tokens of each sample (no model forward, no image encoded)."""
        return token_counts(self.adapter, samples)

    def floors(self, n_text: torch.Tensor, n_visual: torch.Tensor) -> torch.Tensor:
        """(B,) the text-only cost fraction of samples with these token counts: every visual
        token dropped before layer 0, the cheapest their budgets can be."""
        zero = torch.zeros(len(n_text), self.shape.layers)
        return relaxed_fraction(self.shape, zero, n_text, n_visual, mode=self.mode).detach()


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
    idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=g).tolist()
    al.w = [initial_multiplier(session, predictor, [samples[i] for i in idx], relax, lo, hi)] * cfg.bins
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
    """Algorithm 1's ``w(1)``: the multiplier that best balances the two gradients at the start,
    ``argmin_w |dKL/dkeep + w dF/dkeep|^2`` over a batch (the KKT condition of an active
    constraint), at least 0. The straight-through KL gradient's scale depends on the model,
    the pruner's scores and T; starting from w = 0 the multiplier has to climb to it by
    lambda-sized steps, overshooting budgets on the way (measured: lambda grew to its bound)."""
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


# ----------------------------------------------------------------------------- reading schedules off
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


def filled_schedule(space, curve, budget: float) -> PruningSchedule:
    """A mean keep curve's shape (from 1 at its first layer) scaled to fill ``budget``."""
    top = max(float(curve[0]), 1e-6)
    return space.scaled([float(k) / top for k in curve], budget)


class Validation:
    """Scores a predictor as the searcher will use it: per budget, the filled pick of its mean
    curve over held-out questions, pruned physically; the mean KL to the unpruned model.
    The questions are encoded and the teacher run once."""

    def __init__(self, session: Session, samples, budgets, space):
        self.session, self.space = session, space
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
            pick = filled_schedule(self.space, curve, b)
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
    nv = space.n_visual
    out = []
    for b in budgets:
        budget = torch.full((len(probe),), float(b), device=session.device)
        keep = trained.predictor(pooled, budget)
        params = {k: float(v.mean()) for k, v in trained.predictor.kernel_params(pooled, budget).items()}
        relaxed = relaxed_prefill(session.engine, state, keep, session.pruner, relax)
        flops = relaxed_fraction(session.shape, keep.cpu(), n_text, n_visual, mode=session.mode,
                                 score=session.score)  # fmt: skip
        mean = keep.mean(0).tolist()
        schedule = PruningSchedule(tuple(keep_count(k, nv) / nv for k in mean))
        if space.fraction(schedule) > b:
            schedule = space.scaled(schedule.keep, b)
        filled = filled_schedule(space, mean, b)
        hard = session.engine.prefill(state, schedule, session.pruner)
        out.append(Proposal(
            budget=float(b), schedule=schedule, filled=filled, mean_keep=mean, relaxed_flops=float(flops.mean()),
            relaxed_kl=float(kl_to_teacher(relaxed.logits, teacher, session.kl).mean()),
            realised_kl=float(kl_to_teacher(hard.logits, teacher, session.kl).mean()), kernel_params=params,
        ))  # fmt: skip
    return out


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
