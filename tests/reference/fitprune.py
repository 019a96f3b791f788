"""FitPrune as its official code runs it (ywh187/FitPrune, LLaVA-1.5), on ``LlavaLoop``.

Inference (``modeling_llama.py``): inside layer i, if the recipe removes ``r`` tokens there, the
layer's own attention map, maxed over heads, gives each visual token the sum of its column over
the text rows after the image (cross) and the mean over the visual rows (self). The ``r`` lowest
``cross * self`` go before o_proj and the MLP (both act per token: dropping them from the layer's
output is the same), and the position ids keep their original values.

Fit (``statistical_analysis.py``): ``fit_model`` at a tolerance alpha, and the bisection of alpha
around it. Deviation: where the official removal-count loop finds no count (every count leaves
enough), it reuses a stale count from an earlier input or layer; here all but one token go.
"""

from __future__ import annotations

import torch

from reference.llava_loop import LlavaLoop, Sequence


def _head_max(attn: torch.Tensor) -> torch.Tensor:
    return attn[0].max(dim=0).values  # (n, n): the max over heads of every probability


def fitprune(loop: LlavaLoop, scheme: dict[int, int]):
    """``scheme``: layer -> visual tokens removed inside it. Returns, per layer, the original
    visual indices alive at its input, and the final next-token logits."""
    seq, kept = loop.start, []
    for i in range(loop.n_layers):
        kept.append(seq.visual[seq.visual >= 0].clone())
        h, attn = loop.layer(i, seq)
        out = Sequence(h, seq.pos, seq.visual)
        if scheme.get(i, 0):
            lo, hi = seq.image_span
            top = _head_max(attn)
            self_ = (top[lo:hi, lo:hi] / (hi - lo)).sum(0)
            cross = top[hi:, lo:hi].sum(0)
            low = torch.sort(cross * self_, stable=True).indices[: scheme[i]]
            keep = torch.ones(h.shape[1], dtype=torch.bool)
            keep[low + lo] = False
            out = out.take(torch.nonzero(keep).squeeze(1))
        seq = out
    return kept, loop.logits(seq.h)


def unpruned_totals(loop: LlavaLoop) -> list[tuple[float, float]]:
    """Per layer of the unpruned forward: the cross total (over the text rows after the image,
    divided by their number) and the self total (over the visual rows, divided by their number)."""
    seq, out = loop.start, []
    for i in range(loop.n_layers):
        h, attn = loop.layer(i, seq)
        lo, hi = seq.image_span
        top = _head_max(attn)
        out.append((top[hi:, lo:hi].sum().item() / (h.shape[1] - hi), top[lo:hi, lo:hi].sum().item() / (hi - lo)))
        seq = Sequence(h, seq.pos, seq.visual)
    return out


def _removal_count(values: torch.Tensor, order: torch.Tensor, total: float, alpha: float) -> int:
    for i in range(len(order)):
        if values.sum() - values[order[:i]].sum() < total - total * alpha:
            return max(i - 1, 0)
    return len(order) - 1


def fit_model(loops: list[LlavaLoop], totals, alpha: float, reduction_ratio: float, hidden: int, intermediate: int):
    """One fit at tolerance ``alpha``: (whether the FLOPs forecast met ``1 - reduction_ratio`` of the
    original visual-token FLOPs at some layer, the scheme {layer: mean removals, rounded down})."""
    d, f, layers = hidden, intermediate, loops[0].n_layers
    n_visual = int((loops[0].start.visual >= 0).sum())

    def rest(v, layer):  # o_proj + MLP of this layer, then every later layer in full
        return v * d * d + 3 * f * d * v + ((v * d * d * 3 + v * v * d + v * d * v + v * d * d) + d * f * v * 3) * (
            layers - 1 - layer)  # fmt: skip

    origin = ((n_visual * d * d * 3 + n_visual * n_visual * d * 2 + n_visual * d * d) + d * f * n_visual * 3) * layers
    left = [n_visual] * len(loops)
    seqs = [loop.start for loop in loops]
    scheme = {i: 0 for i in range(layers)}
    already, reached = 0, False
    for i in range(layers):
        forecast = 0
        for v in left:
            already += v * d * d * 3 + v * v * d * 2
            forecast += rest(v, i)
        if (already + forecast) / len(left) <= origin * (1 - reduction_ratio):
            reached = True
            break
        for s, loop in enumerate(loops):
            seq = seqs[s]
            h, attn = loop.layer(i, seq)
            lo, hi = seq.image_span
            top = _head_max(attn)
            cross = top[hi:, lo:hi].sum(dim=0) / (h.shape[1] - hi)
            self_ = (top[lo:hi, lo:hi] / (hi - lo)).sum(dim=0)
            w_cross, w_self = totals[s][i]
            by_cross, by_self = torch.argsort(cross, stable=True), torch.argsort(self_, stable=True)
            low_cross = by_cross[: _removal_count(cross, by_cross, w_cross, alpha)]
            low_self = by_self[: _removal_count(self_, by_self, w_self, alpha)]
            values, counts = torch.cat([low_cross, low_self]).unique(return_counts=True)
            both = values[counts > 1]
            scheme[i] += len(both)
            out = Sequence(h, seq.pos, seq.visual)
            if len(both):
                keep = torch.ones(h.shape[1], dtype=torch.bool)
                keep[both + lo] = False
                out = out.take(torch.nonzero(keep).squeeze(1))
                left[s] -= len(both)
            seqs[s] = out
            already += left[s] * d * d + 3 * f * d * left[s]
    return reached, {i: scheme[i] // len(loops) for i in range(layers)}


def fit(loops: list[LlavaLoop], reduction_ratio: float, hidden: int, intermediate: int) -> dict[int, int]:
    """The official bisection of alpha: the scheme of the last ``fit_model`` run."""
    totals = [unpruned_totals(loop) for loop in loops]
    high, low = 1.0, 0.0
    while high - low > 0.01 + 1e-6:
        mid = (low + high) / 2
        reached, scheme = fit_model(loops, totals, mid, reduction_ratio, hidden, intermediate)
        high, low = (mid, low) if reached else (high, mid)
    return scheme
