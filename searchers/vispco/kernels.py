"""Keep-ratio kernels (paper Sec. 3.3): a few parameters -> the keep fraction of every layer.

A kernel turns the predictor's unconstrained outputs ``u`` (B, P) into its parameters (the
pruning position or rate ``k``, the retention ``r``, ...) and those into a keep curve over the
decoder layers ``i = 0 .. L-1``, clipped to [0, 1]. The paper counts layers from 1: where a
kernel has fixed positions (Eq. 17's step centres) they are placed as the paper places them;
elsewhere the learnt ``k`` and ``r`` absorb the shift of origin. Every curve here is non-increasing in
``i`` by construction, as a schedule must be.

====================  ====================================================  =============
name                  keep(i)                                               paper
====================  ====================================================  =============
``psigmoid``          1 + (r - 1) * sigm(gamma * (i - k)), gamma steep      Eq. 14
``exponential``       r * exp(-k * i)                                       Eq. 15
``linear``            r - k * i                                             Eq. 16
``gentle``            Eq. 14 with a small gamma                             Sec. 3.3
``multistep``         1 - sum_j (1 - r) / M * sigm(k * (i+1 - (2j-1) L / 2M)) Eq. 17
``free``              prod_{j <= i} sigm(u_j): one value per layer          (future work)
``ledge``             s * (1 + (f - 1) * sigm(gamma * (i - k))), gamma steep   (ours)
====================  ====================================================  =============

``ledge`` is Eq. 14 with a free starting level ``s``: the shape of the best 50%-budget schedules
on the embedded model (50-75% kept through the first half, a deep cut after; measured, see
docs/notes/vispco-training.md), which no paper kernel can draw below 62% of the FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Kernel:
    name: str = ""

    def n_params(self, layers: int) -> int:
        return 2

    def params(self, u: torch.Tensor, layers: int) -> dict[str, torch.Tensor]:
        """The kernel's named parameters (each (B,)) from the raw outputs ``u`` (B, P)."""
        raise NotImplementedError

    def curve(self, p: dict[str, torch.Tensor], layers: int) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, u: torch.Tensor, layers: int) -> torch.Tensor:
        """(B, L) keep fractions in [0, 1]."""
        return self.curve(self.params(u, layers), layers).clamp(0.0, 1.0)


def _layers(p: dict, layers: int) -> torch.Tensor:
    ref = next(iter(p.values()))
    return torch.arange(layers, dtype=ref.dtype, device=ref.device)[None, :]


@dataclass(frozen=True)
class PSigmoid(Kernel):
    """A sigmoid step from 1 down to ``r`` around layer ``k`` (in [-0.5, L - 0.5]); ``gamma``
    sets how sharp: steep (single-layer pruning, the FastV shape) or gentle (progressive)."""

    name: str = "psigmoid"
    gamma: float = 10.0

    def params(self, u, layers):
        return {"k": layers * torch.sigmoid(u[:, 0]) - 0.5, "r": torch.sigmoid(u[:, 1])}

    def curve(self, p, layers):
        i = _layers(p, layers)
        return 1 + (p["r"][:, None] - 1) * torch.sigmoid(self.gamma * (i - p["k"][:, None]))


@dataclass(frozen=True)
class Exponential(Kernel):
    name: str = "exponential"

    def params(self, u, layers):
        return {"k": F.softplus(u[:, 0]) * 4 / layers, "r": torch.sigmoid(u[:, 1])}

    def curve(self, p, layers):
        return p["r"][:, None] * torch.exp(-p["k"][:, None] * _layers(p, layers))


@dataclass(frozen=True)
class Linear(Kernel):
    """``r`` may exceed 1 (then the first layers, clipped, keep everything)."""

    name: str = "linear"

    def params(self, u, layers):
        return {"k": F.softplus(u[:, 0]) * 2 / layers, "r": 2 * torch.sigmoid(u[:, 1])}

    def curve(self, p, layers):
        return p["r"][:, None] - p["k"][:, None] * _layers(p, layers)


@dataclass(frozen=True)
class MultiStep(Kernel):
    """``steps`` (M) equal sigmoid steps of sharpness ``k`` centred at (2j - 1) L / 2M, layers
    counted from 1 as the paper counts them (our 0-based layer i is its layer i + 1).

    With the steps at fixed places and r in (0, 1) as the paper has it, the curve never falls
    under a staircase: on the embedded model no multi-step curve costs under 62% of the FLOPs,
    and lower budgets get the cheapest curve scaled into them (measured; a range reaching
    r = -1 followed the budgets but chose worse shapes, see docs/notes/vispco-training.md)."""

    name: str = "multistep"
    steps: int = 3

    def params(self, u, layers):
        return {"k": 1 + F.softplus(u[:, 0]) * 4, "r": torch.sigmoid(u[:, 1])}

    def curve(self, p, layers):
        i = _layers(p, layers)
        m = self.steps
        out = torch.ones_like(i.expand(p["r"].shape[0], layers))
        for j in range(1, m + 1):
            centre = (2 * j - 1) * layers / (2 * m)  # in the paper's 1-based layers
            out = out - (1 - p["r"][:, None]) / m * torch.sigmoid(p["k"][:, None] * (i + 1 - centre))
        return out


@dataclass(frozen=True)
class Free(Kernel):
    """One parameter per layer: keep(i) is the product of sigmoids up to layer i."""

    name: str = "free"

    def n_params(self, layers):
        return layers

    def params(self, u, layers):
        return {f"s{i}": torch.sigmoid(u[:, i]) for i in range(layers)}

    def curve(self, p, layers):
        return torch.cumprod(torch.stack([p[f"s{i}"] for i in range(layers)], 1), 1)


@dataclass(frozen=True)
class Ledge(Kernel):
    """A steep step at layer ``k`` from a level ``s`` (which may be under 1 from layer 0 on) down
    to ``f * s``."""

    name: str = "ledge"
    gamma: float = 10.0

    def n_params(self, layers):
        return 3

    def params(self, u, layers):
        return {"k": layers * torch.sigmoid(u[:, 0]) - 0.5, "s": torch.sigmoid(u[:, 1]), "f": torch.sigmoid(u[:, 2])}

    def curve(self, p, layers):
        i = _layers(p, layers)
        step = torch.sigmoid(self.gamma * (i - p["k"][:, None]))
        return p["s"][:, None] * (1 + (p["f"][:, None] - 1) * step)


KERNELS = {
    "psigmoid": PSigmoid(),
    "exponential": Exponential(),
    "linear": Linear(),
    "gentle": PSigmoid(name="gentle", gamma=1.0),
    "multistep": MultiStep(),
    "free": Free(),
    "ledge": Ledge(),
}


def kernel(name: str, *, steps: int = 3) -> Kernel:
    if name not in KERNELS:
        import difflib

        close = difflib.get_close_matches(name, KERNELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown kernel {name!r}{hint} (known: {', '.join(KERNELS)})")
    if name == "multistep":
        return MultiStep(steps=steps)
    return KERNELS[name]
