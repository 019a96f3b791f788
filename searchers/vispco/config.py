"""The settings of VisPCO's predictor training (``TrainConfig``), checked when made; free of
torch, so the searcher reads them cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from searchers.vispco import DEFAULT_KERNEL

KL_DIRECTIONS = ("pruned-original", "original-pruned")


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
    # the multipliers' starting value w(1), an input of Algorithm 1: 0, no price on FLOPs until a
    # budget is exceeded (the official code's w = 1 is the same in its units: its KL is scaled
    # by 1000 and its FLOPs are TFLOPs); "kkt": the value that balances the two gradients on one
    # batch (``initial_multiplier``), which the straight-through KL gradient's scale can make
    # thousands, more than lambda undoes in a run (docs/notes/vispco-training.md)
    w_init: float | str = 0.0
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
        from searchers.vispco.kernels import kernel

        kernel(self.kernel, steps=self.multisteps)  # raises on an unknown name
        if self.kl not in KL_DIRECTIONS:
            raise ValueError(f"vispco: kl must be one of {', '.join(KL_DIRECTIONS)}, got {self.kl!r}")
        for name in ("steps", "batch_size", "inner", "bins", "multisteps", "hidden", "equalise_bins"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"vispco: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.budget_hi <= 1:
            raise ValueError(f"vispco: budget_hi must be in (0, 1], got {self.budget_hi}")
        if self.w_init != "kkt" and (isinstance(self.w_init, (bool, str)) or not float(self.w_init) >= 0):
            raise ValueError(f"vispco: w_init must be 'kkt' or a number >= 0, got {self.w_init!r}")
        if self.select not in ("best", "last"):
            raise ValueError(f"vispco: select must be 'best' or 'last', got {self.select!r}")
        if int(self.val_every) < 1:
            raise ValueError(f"vispco: val_every must be >= 1, got {self.val_every}")
        budgets = (self.val_budgets,) if isinstance(self.val_budgets, (int, float)) else self.val_budgets
        object.__setattr__(self, "val_budgets", tuple(float(b) for b in budgets))
        if not self.val_budgets or not all(0 < b <= 1 for b in self.val_budgets):
            raise ValueError(f"vispco: val_budgets must be fractions in (0, 1], got {self.val_budgets}")
