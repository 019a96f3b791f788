"""What VisPCO's training and its probes share: the frozen VLM, its pruner and the questions
(``Session``: encoded once, the teacher's logits cached), the divergence to the unpruned model
(``kl_to_teacher``) and the resampling that makes visual-token counts uniform."""

from __future__ import annotations

import torch

from paretobench.adapters import adapter_for, token_counts
from paretobench.engine import Engine
from paretobench.flops import DecoderShape
from paretobench.sequence import SeqState
from searchers.vispco.objective import relaxed_fraction


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
