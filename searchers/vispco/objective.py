"""VisPCO's objective: distillation loss under a FLOPs constraint, by the augmented Lagrangian.

``F(keep)`` is the relaxed cost: the same analytic count as ``paretobench.flops`` (GQA,
SwiGLU's three matrices, attention at each layer's live count) evaluated at the CONTINUOUS
live count ``n_text + keep[i] * Nv``, so it is differentiable in ``keep``; scoring steps are
added at the layers that prune, as constants. At whole token counts it equals the realised
cost (a test checks it).

The constraint ``F <= B`` becomes, with the slack eliminated (paper Eq. 8),

    phi = L + (z^2 - w^2) / (2 lambda),     z = max(0, w - lambda (B - F)).

``z`` is also the multiplier's next value (Algorithm 1, line 17, for the inequality). Budgets
differ from sample to sample, and so does the price of FLOPs at each budget: we keep one
multiplier per budget bin instead of the paper's single ``w`` (with one bin it is the paper's).
``lambda`` grows by ``alpha`` (up to ``lam_max``) after an outer iteration whose violation is
at least ``eps`` and did not shrink below ``beta`` times the previous one. Algorithm 1 stops
once the violation is under ``eps``; a predictor trains on over every budget instead, so the
multipliers keep their update (a multiplier that stayed high would keep it under budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from paretobench.flops import DecoderShape, layer_flops
from paretobench.schedule import FREE, ScoreCost, keep_count


def relaxed_fraction(shape: DecoderShape, keep: torch.Tensor, n_text: torch.Tensor, n_visual: torch.Tensor,
                     *, mode: str = "total", score: ScoreCost = FREE) -> torch.Tensor:  # fmt: skip
    """(B,) cost of ``keep`` (B, L) as a fraction of each row's unpruned prefill, differentiable."""
    nt, nv = n_text.double()[:, None], n_visual.double()[:, None]  # counts reach 1e12 FLOPs: double
    cost = layer_flops(shape, nt + keep.double() * nv).sum(1)
    cost = cost + _scoring(shape, keep.detach(), n_text, n_visual, score)
    full = layer_flops(shape, nt + nv).squeeze(1) * shape.layers
    if mode == "total":
        return (cost / full).to(keep.dtype)
    floor = layer_flops(shape, nt).squeeze(1) * shape.layers
    return ((cost - floor) / (full - floor)).to(keep.dtype)


def _scoring(shape, keep, n_text, n_visual, score: ScoreCost) -> torch.Tensor:
    """Per row, what the pruner's scoring steps cost where the (rounded) live count drops, as
    ``schedule_flops`` counts them; constant in ``keep``."""
    out = torch.zeros(keep.shape[0], dtype=torch.float64)
    if score == FREE:
        return out
    for b in range(keep.shape[0]):
        nv, nt = int(n_visual[b]), int(n_text[b])
        before = nv
        for i in range(shape.layers):
            c = keep_count(float(keep[b, i]), nv)
            if 0 < c < before:
                out[b] += score.step(shape, i, nt, before)
            before = c
    return out


@dataclass
class AugmentedLagrangian:
    lam: float = 100.0  # penalty parameter lambda
    alpha: float = 2.0  # lambda's growth factor
    beta: float = 0.5  # the violation must shrink by this factor, or lambda grows
    eps: float = 0.01  # a violation under this counts as satisfied (lambda stays)
    lam_max: float = 1e4  # lambda stays bounded (the point of the augmented Lagrangian)
    bins: int = 4  # multipliers, one per budget bin over [lo, hi]
    lo: float = 0.0
    hi: float = 1.0
    # "inequality": F <= B with the slack eliminated (the paper); "equality": F = B (Eq. 4 with
    # h = B - F), for when the straight-through KL gradient leaves budgets unused
    constraint: str = "inequality"
    w: list[float] = field(default_factory=list)
    previous: float | None = None  # the last outer iteration's violation
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if self.constraint not in ("inequality", "equality"):
            raise ValueError(f"constraint must be 'inequality' or 'equality', got {self.constraint!r}")
        self.w = self.w or [0.0] * self.bins

    def bin(self, budget: torch.Tensor) -> torch.Tensor:
        t = ((budget - self.lo) / max(self.hi - self.lo, 1e-9) * self.bins).long()
        return t.clamp(0, self.bins - 1)

    def penalty(self, budget: torch.Tensor, flops: torch.Tensor) -> torch.Tensor:
        """(B,) the constraint's term of phi, per sample."""
        w = torch.tensor(self.w, dtype=flops.dtype)[self.bin(budget)]
        if self.constraint == "equality":
            h = budget - flops
            return -w * h + self.lam / 2 * h**2
        z = torch.clamp(w - self.lam * (budget - flops), min=0.0)
        return (z**2 - w**2) / (2 * self.lam)

    def violation(self, budget: torch.Tensor, flops: torch.Tensor) -> float:
        """How far the costs exceed the budgets: per budget bin, the positive part of the mean
        excess, averaged over the bins that were seen. Per-sample excesses, which a single
        predictor cannot drive to zero for every input, would keep it noisy and make lambda
        grow at every iteration (measured: to its bound in 200 steps)."""
        excess = (flops - budget).double()
        bins = self.bin(budget)
        part = (lambda x: x.abs()) if self.constraint == "equality" else (lambda x: x.clamp(min=0.0))  # noqa: E731
        seen = [part(excess[bins == j].mean()) for j in range(self.bins) if (bins == j).any()]
        return float(torch.stack(seen).mean()) if seen else 0.0

    def update(self, budget: torch.Tensor, flops: torch.Tensor) -> dict:
        """The end of an outer iteration (Algorithm 1, lines 8-17), given the budgets and
        relaxed costs seen during it."""
        budget, flops = budget.detach().double(), flops.detach().double()
        v = self.violation(budget, flops)
        entry = {"violation": v, "lam": self.lam}
        if v >= self.eps and self.previous is not None and v >= self.beta * self.previous:
            self.lam = min(self.lam * self.alpha, self.lam_max)
        # the multipliers move every iteration: training goes on over all budgets after the
        # constraint is met, and a multiplier left high would keep the predictor under budget
        bins = self.bin(budget)
        for j in range(self.bins):
            sel = bins == j
            if sel.any():
                z = self.w[j] - self.lam * (budget[sel] - flops[sel])
                self.w[j] = float(z.mean() if self.constraint == "equality" else z.clamp(min=0.0).mean())
        self.previous = v
        entry.update(lam_after=self.lam, w=list(self.w))
        self.history.append(entry)
        return entry
