"""SparseVLM: text raters rank the visual tokens; the best of the dropped ones are recycled as
cluster tokens.

As its official code runs (Gumpest/SparseVLMs, version "1_0", the default; docs/methods.md):

1. Raters, chosen once per input from the embeddings of every visual token: the text tokens
   after the image whose relevance is above the mean, relevance = softmax over the text tokens
   of visual . text, averaged over the visual tokens.
2. Score of a visual token = head-mean attention from the raters to it, averaged over raters,
   in the layer whose output is pruned (our step before the next layer, ``score_layer =
   "previous"``: the same attention map and the same hidden states).
3. Recycling (``recycle``, on by default): of the dropped tokens, the ``int(0.3 * dropped) + 1``
   best scored are clustered by density peaks (``density_peak_centres``) into
   ``int(candidates / 10) + 1`` clusters; each cluster's mean becomes a new visual token, the
   block of them placed right after the kept visual tokens. So a step that keeps ``k`` ranked
   tokens leaves ``k + clusters``, and the next step ranks those.
4. Positions are renumbered 0..n-1 after each step (``positions="repack"``; "keep" keeps the
   original ids, then each recycled token takes its cluster centre's position).

``count="rank"`` is the first release's rule (commit 91fb6d9, the paper's Sec. 3.2): at a step,
the rank of the raters' attention to the visual tokens (a raters x visual matrix) decides how
many stay, ``min(int(rank * scale + bias), live - 1)`` (``scale`` 13.5 and ``bias`` 0 by
default, as its MME script), and a full-rank step prunes nothing; the steps are the outputs of
layers 2, 6, 15 and 19 of 32. The schedule then only says where steps happen, so a search, which
costs schedules by their counts, refuses this mode.

Published default (LLaVA-1.5-7B, 32 layers, 576 tokens, the 192-token setting): the outputs of
layers 2, 6 and 15 are pruned to 300, 200 and 110 ranked tokens (309, 204 and 113 with the
recycled ones): for our decoders those layers scaled to the depth, so the inputs of the layers
after them are the first with fewer tokens.
"""

from __future__ import annotations

import math

from paretobench.registry import PRUNERS
from pruners.base import Pruner, Selection

PUBLISHED_LAYERS, PUBLISHED_DEPTH = (2, 6, 15), 32  # the layers whose OUTPUT is pruned
RANK_LAYERS = (2, 6, 15, 19)  # the first release's, for count="rank"
PUBLISHED_KEEP = (300 / 576, 200 / 576, 110 / 576)
SETTINGS = {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)}  # of 576 tokens


def density_peak_centres(x, n_centres: int):
    """Density-peak clustering of the rows of ``x`` (N, C) into ``n_centres`` clusters, as
    SparseVLM clusters: distances divided by sqrt(C) (so that densities do not underflow at
    hidden-state scale), density = exp(-mean squared distance to the ``n_centres`` nearest rows,
    the row itself included), each row's distance to its nearest denser row (the densest gets
    the largest distance of all), centres = the ``n_centres`` largest density x distance.
    Returns the centres' rows (in that order) and each row's cluster (its nearest centre; a
    centre is its own)."""
    import torch

    x = x.float()
    n, c = x.shape
    # the exact distances, not the matrix-product shortcut (whose rounding can reorder near ties)
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(c)
    k = min(n_centres, n)
    density = torch.exp(-dist.topk(k, dim=1, largest=False).values.pow(2).mean(1))
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    parent = dist.masked_fill(~denser, float("inf")).min(1).values
    parent = torch.where(torch.isinf(parent), dist.max(), parent)
    centres = torch.sort(density * parent, descending=True, stable=True).indices[:n_centres]
    assign = dist[centres].argmin(0)
    assign[centres] = torch.arange(len(centres), device=x.device)
    return centres, assign


@PRUNERS.register("sparsevlm", doc="text raters' attention; the best dropped tokens recycled as cluster tokens")
class SparseVLM(Pruner):
    name = "sparsevlm"
    version = 2  # 1: raters per step, recycled tokens in place of kept ones, unscaled 5-NN clustering
    score_rows = "text"  # the raters, at most every text token
    relaxes_as_ranking = True  # its select ranks by score, then adds the recycled clusters

    def __init__(self, recycle: float = 0.3, positions: str = "repack", count: str = "fixed", scale: float = 13.5,
                 bias: float = 0.0):  # fmt: skip
        if not 0.0 <= recycle <= 1.0:
            raise ValueError(f"sparsevlm recycle share {recycle} must be in [0, 1] (0: no recycling)")
        if positions not in ("repack", "keep"):
            raise ValueError(f"sparsevlm positions {positions!r}: valid: repack, keep")
        if count not in ("fixed", "rank"):
            raise ValueError(f"sparsevlm count {count!r}: valid: fixed (the schedule's), rank (the first release's)")
        self.recycle, self.positions, self.count, self.scale, self.bias = recycle, positions, count, scale, bias

    @property
    def chooses_counts(self) -> bool:
        return self.count == "rank"

    def params(self):
        out = {"recycle": self.recycle, "positions": self.positions}
        if self.count == "rank":  # the default mode keeps the keys it had before the option existed
            out.update(count=self.count, scale=self.scale, bias=self.bias)
        return out

    def score_cost(self):
        from dataclasses import replace

        return replace(super().score_cost(), recycle=self.recycle)

    def raters(self, ctx, b: int):
        """Row b's raters as positions of the current sequence. They are chosen on the sequence
        before any step (``ctx.initial``) and found again by their rank among the row's text
        tokens, which no step removes or reorders."""
        import torch

        first = ctx.initial
        visual = torch.nonzero(first.visual[b]).squeeze(1)
        text = torch.nonzero(first.valid[b] & ~first.visual[b]).squeeze(1)
        after = torch.nonzero(text > visual.max()).squeeze(1)  # ranks of the text tokens after the image
        v, t = first.h0[b, visual].float(), first.h0[b, text[after]].float()
        relevance = (v @ t.T).softmax(-1).mean(0)
        chosen = after[relevance > relevance.mean()]
        if not len(chosen):  # every text token equally relevant
            chosen = after
        st = ctx.state
        return torch.nonzero(st.valid[b] & ~st.visual[b]).squeeze(1)[chosen]

    def rater_attention(self, ctx):
        """(B, nq, n) the raters' head-mean attention rows (padded to the longest row's raters) and
        (B, nq) which of them are real."""
        import torch

        raters = [self.raters(ctx, b) for b in range(ctx.state.h.shape[0])]
        nq = max(len(r) for r in raters)
        query = torch.stack([torch.cat([r, r[-1:].expand(nq - len(r))]) for r in raters])
        probs = ctx.attention(query, n_real=[len(r) for r in raters]).mean(1)
        real = torch.stack([torch.arange(nq, device=query.device) < len(r) for r in raters])
        return probs, real

    def scores(self, ctx):
        probs, real = self.rater_attention(ctx)
        real = real.float()
        return (probs * real[..., None]).sum(1) / real.sum(1, keepdim=True)

    def select(self, ctx, k):
        import torch

        probs, real = self.rater_attention(ctx)
        scores = (probs * real[..., None].float()).sum(1) / real.float().sum(1, keepdim=True)
        keep, added = [], []
        for b, count in enumerate(k):
            alive = ctx.visual_positions(b)
            order = alive[torch.sort(scores[b, alive].float(), descending=True, stable=True).indices]
            if self.count == "rank":
                rank = int(torch.linalg.matrix_rank(probs[b][real[b]][:, alive].float()))
                count = len(alive) if rank >= len(alive) else min(int(rank * self.scale + self.bias), len(alive) - 1)
            keep.append(order[:count].sort().values)
            n_clusters = self.score_cost().added(len(alive), count)
            if not n_clusters:
                added.append(None)
                continue
            dropped = order[count:].sort().values  # in sequence order, then the best scored of them
            candidates = dropped[torch.sort(scores[b, dropped].float(), descending=True, stable=True).indices]
            candidates = candidates[: int(len(dropped) * self.recycle) + 1]
            h = ctx.state.h[b, candidates]
            centres, assign = density_peak_centres(h, n_clusters)
            means = torch.stack([h[assign == c].float().mean(0) for c in range(n_clusters)])
            added.append((candidates[centres], means))
        return Selection(keep, added=added)

    def preset(self, layers):
        if self.count == "rank":  # where the first release steps; each step's count is the pruner's
            from paretobench.schedule import PruningSchedule, keep_count

            at = sorted({min(layers - 1, keep_count(layer / PUBLISHED_DEPTH, layers) + 1) for layer in RANK_LAYERS})
            return PruningSchedule.steps(layers, {i: 1 - (j + 1) / (len(at) + 1) for j, i in enumerate(at)})
        return self.setting_schedule(layers, 192)

    @staticmethod
    def setting_schedule(layers: int, setting: int = 192):
        """A published setting (192, 128, 96 or 64 tokens on average) for a ``layers``-layer
        decoder: the pruned layers scaled to the depth (half up), the counts as fractions of 576."""
        from paretobench.schedule import PruningSchedule, ScheduleError, keep_count

        if setting not in SETTINGS:
            raise ScheduleError(f"sparsevlm setting {setting}: valid: {', '.join(map(str, SETTINGS))}")
        steps, last = {}, 0
        for layer, count in zip(PUBLISHED_LAYERS, SETTINGS[setting]):
            at = max(last + 1, keep_count(layer / PUBLISHED_DEPTH, layers) + 1)  # the input after the pruned output
            if at < layers:
                steps[at], last = count / 576, at
        return PruningSchedule.steps(layers, steps)
