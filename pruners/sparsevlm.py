"""SparseVLM: text-guided ranking by "rater" tokens, and recycling of pruned tokens.

1. Raters: the text tokens that can see the image (after its first token, attention being
   causal) whose relevance to the visual tokens is above the mean. Relevance of a text token =
   softmax over the text tokens of visual . text on the input embeddings, averaged over the
   visual tokens.
2. Score of a visual token = head-mean attention from the raters to it, averaged over raters,
   in the layer before the pruning step.
3. Recycling: of the tokens the ranking would drop, the best-scored ``recycle`` share is
   clustered (density peaks over k nearest neighbours, on the hidden states) into
   ``n / 10 + 1`` clusters; each cluster's mean replaces its centre token, and those centres
   take the places of the lowest-ranked kept tokens, so the schedule's count holds exactly.

Published default (LLaVA-1.5-7B, 32 layers, the 192-token setting): steps at layers 2, 6 and
15 keeping 300, 200 and 110 of 576 tokens. The preset scales the layers to the decoder's depth.
"""

from __future__ import annotations

import math

from pruners.base import Pruner, Selection

PUBLISHED_LAYERS, PUBLISHED_DEPTH = (2, 6, 15), 32
PUBLISHED_KEEP = (300 / 576, 200 / 576, 110 / 576)


def density_peak_centres(x, n_centres: int, k: int = 5):
    """Indices of ``n_centres`` cluster centres of the rows of ``x`` (density peaks with a
    k-nearest-neighbour density), and each row's cluster (its nearest centre)."""
    import torch

    n = x.shape[0]
    dist = torch.cdist(x.float(), x.float())
    k = max(1, min(k, n - 1))
    knn = dist.topk(k + 1, largest=False).values[:, 1:] if n > 1 else dist[:, :1]
    density = torch.exp(-knn.pow(2).mean(1))
    higher = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    far = dist.masked_fill(~higher, float("inf")).min(1).values
    far = torch.where(torch.isinf(far), dist.max(1).values, far)  # the densest point
    centres = torch.sort((density * far), descending=True, stable=True).indices[:n_centres]
    assign = dist[:, centres].argmin(1)
    return centres, assign


class SparseVLM(Pruner):
    name = "sparsevlm"
    score_rows = "text"  # the raters, at most every text token

    def __init__(self, recycle: float = 0.3):
        if not 0.0 <= recycle <= 1.0:
            raise ValueError(f"sparsevlm recycle share {recycle} must be in [0, 1]")
        self.recycle = recycle

    def raters(self, ctx, b: int):
        import torch

        st = ctx.state
        visual = torch.nonzero(st.visual[b]).squeeze(1)
        text = torch.nonzero(st.valid[b] & ~st.visual[b]).squeeze(1)
        text = text[text > visual.min()] if len(visual) else text
        v, t = st.h0[b, visual].float(), st.h0[b, text].float()
        relevance = (v @ t.T).softmax(-1).mean(0)
        chosen = text[relevance > relevance.mean()]
        return chosen if len(chosen) else text

    def scores(self, ctx):
        import torch

        raters = [self.raters(ctx, b) for b in range(ctx.state.h.shape[0])]
        nq = max(len(r) for r in raters)
        query = torch.stack([torch.cat([r, r[-1:].expand(nq - len(r))]) for r in raters])
        probs = ctx.attention(query, n_real=[len(r) for r in raters]).mean(1)  # (B, nq, n)
        real = torch.stack([torch.arange(nq, device=query.device) < len(r) for r in raters]).float()
        return (probs * real[..., None]).sum(1) / real.sum(1, keepdim=True)

    def select(self, ctx, k):
        import torch

        scores = self.scores(ctx).float()
        keep, merged = [], []
        for b, count in enumerate(k):
            alive = ctx.visual_positions(b)
            order = alive[torch.sort(scores[b, alive], descending=True, stable=True).indices]
            dropped = order[count:]
            candidates = dropped[: math.ceil(self.recycle * len(dropped))]
            n_centres = min(len(candidates) // 10 + 1, count) if len(candidates) and count else 0
            if n_centres == 0:
                keep.append(order[:count].sort().values)
                merged.append(None)
                continue
            centres, assign = density_peak_centres(ctx.state.h[b, candidates], n_centres)
            means = torch.stack([ctx.state.h[b, candidates[assign == c]].mean(0) for c in range(n_centres)])
            chosen = torch.cat([order[: count - n_centres], candidates[centres]])
            sort = chosen.argsort()
            keep.append(chosen[sort])
            # the kept tokens' hidden states, in sorted order: merged clusters at the centres
            h = torch.cat([ctx.state.h[b, order[: count - n_centres]], means])
            merged.append(h[sort])
        return Selection(keep, hidden=merged)

    def preset(self, layers):
        from paretobench.schedule import PruningSchedule

        steps, last = {}, 0
        for layer, keep in zip(PUBLISHED_LAYERS, PUBLISHED_KEEP):
            at = max(last + 1, round(layer * layers / PUBLISHED_DEPTH), 1)
            if at < layers:
                steps[at], last = keep, at
        return PruningSchedule.steps(layers, steps)

    def params(self):
        return {"recycle": self.recycle}
