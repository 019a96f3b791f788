"""The ratio predictor (paper Fig. 2): an input's pooled embeddings and a FLOPs budget -> the
parameters of a keep kernel -> a keep fraction per decoder layer.

The input is what the language model sees at layer 0: the mean of the visual token embeddings
(after the projector) and the mean of the text token embeddings, concatenated and
layer-normalised. The budget enters through FiLM: Fourier features of ``B`` give a per-unit
scale and shift of the hidden layer, so one network serves every budget.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from searchers.vispco.kernels import Kernel


def pooled_inputs(state) -> torch.Tensor:
    """(B, 2D): mean visual and mean text embeddings of each row of a ``SeqState`` at layer 0."""
    h = state.h0 if state.h0 is not None else state.h
    visual = state.visual.unsqueeze(-1).to(h.dtype)
    text = (state.valid & ~state.visual).unsqueeze(-1).to(h.dtype)
    mean_v = (h * visual).sum(1) / visual.sum(1).clamp_min(1)
    mean_t = (h * text).sum(1) / text.sum(1).clamp_min(1)
    return torch.cat([mean_v, mean_t], -1).float()


class RatioPredictor(nn.Module):
    def __init__(self, dim: int, layers: int, kernel: Kernel, *, hidden: int = 64, frequencies: int = 6):
        super().__init__()
        self.layers, self.kernel, self.frequencies = layers, kernel, frequencies
        self.norm = nn.LayerNorm(2 * dim)
        self.inp = nn.Linear(2 * dim, hidden)
        self.film = nn.Sequential(nn.Linear(2 * frequencies + 1, hidden), nn.GELU(), nn.Linear(hidden, 2 * hidden))
        self.mid = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, kernel.n_params(layers))
        for m in (self.film[-1], self.head):  # start as the identity FiLM and the kernel's mid-range curve
            nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)

    def budget_features(self, budget: torch.Tensor) -> torch.Tensor:
        f = 2.0 ** torch.arange(self.frequencies, device=budget.device, dtype=torch.float32) * math.pi
        x = budget.float()[:, None] * f[None, :]
        return torch.cat([budget.float()[:, None], torch.sin(x), torch.cos(x)], -1)

    def raw(self, pooled: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """(B, P) unconstrained kernel parameters."""
        h = nn.functional.gelu(self.inp(self.norm(pooled)))
        scale, shift = self.film(self.budget_features(budget)).chunk(2, -1)
        h = nn.functional.gelu(self.mid(h * (1 + scale) + shift))
        return self.head(h)

    def forward(self, pooled: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """(B, L) keep fractions, non-increasing over layers, in [0, 1]."""
        return self.kernel(self.raw(pooled, budget), self.layers)

    def kernel_params(self, pooled: torch.Tensor, budget: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.kernel.params(self.raw(pooled, budget), self.layers)
