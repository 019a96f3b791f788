"""ViTCoP: prune in the vision encoder first, then co-prune inside the LLM by K-norm saliency,
keeping every cluster of the image represented and merging the dropped tokens into it.

- Vision stage (a step before decoder layer 0): keep the patches the vision tower's CLS token
  attends to most (feature layer, head mean), then cluster the kept ones on their vision keys
  (density peaks, ``k / 10 + 1`` clusters). The adapter gives both per visual token
  (``vision_cls_attention``, ``vision_keys``). Towers without a CLS token (Qwen2-VL,
  Qwen2.5-VL) get the usual CLS-free substitute instead: the attention each token's patches
  RECEIVE in the tower's last block (head mean, averaged over the image's query patches,
  summed over the patches merged into that token), with the mean of those patches' keys.
- LLM stages: saliency = L2 norm of the head-mean key vector in the layer before the step,
  SMALLER norm = more important (it needs only K, so it works with FlashAttention). The
  tokens to keep are shared out over the clusters by size (largest remainder, at least one per
  cluster while there are enough), each cluster keeping its most salient tokens; each dropped
  token is averaged into the kept token of its cluster whose key is most similar.
  Without a vision stage, the clusters are formed at the first LLM step on its keys.

Preset (our reading of the method; its abstract gives no numbers): half the patches in the
vision stage, a quarter from the LLM's early step (layer 2 of 32, scaled), and a fifth of that
from three quarters of the depth on.
"""

from __future__ import annotations

from pruners.base import Pruner, Selection
from pruners.sparsevlm import density_peak_centres


def _quota(sizes: list[int], k: int) -> list[int]:
    """Share ``k`` over clusters of the given sizes: proportional, largest remainder, at least
    one per non-empty cluster while ``k`` allows (biggest clusters first), never above a size."""
    n = len(sizes)
    order = sorted(range(n), key=lambda i: -sizes[i])
    q = [0] * n
    for i in order[: min(k, n)]:
        q[i] = 1
    left = k - sum(q)
    total = sum(sizes)
    if left > 0 and total:
        extra = [sizes[i] * left / total for i in range(n)]
        for i in range(n):
            q[i] += min(int(extra[i]), sizes[i] - q[i])
        rest = k - sum(q)
        for i in sorted(range(n), key=lambda i: -(extra[i] - int(extra[i]))):
            if rest == 0:
                break
            if q[i] < sizes[i]:
                q[i] += 1
                rest -= 1
        while rest > 0:  # rounding left tokens over: give them wherever there is room
            i = next(i for i in order if q[i] < sizes[i])
            q[i] += 1
            rest -= 1
    return q


class ViTCoP(Pruner):
    name = "vitcop"
    score_rows = "none"
    reads_keys = True  # K-norm saliency
    needs_vision = True  # the adapter must provide the vision tower's CLS attention (or a substitute) and keys

    @staticmethod
    def _cluster(features, k: int):
        import torch

        if k == 0 or len(features) == 0:
            return torch.zeros(len(features), dtype=torch.long, device=features.device)
        _, assign = density_peak_centres(features, min(k // 10 + 1, len(features)))
        return assign

    def select(self, ctx, k):
        import torch

        st = ctx.state
        clusters = st.by_slot.get("vitcop_cluster")
        clusters = (torch.full(st.slot.shape[:1] + (max(st.n_visual),), -1, device=st.slot.device)
                    if clusters is None else clusters.clone())  # fmt: skip
        keep, merged = [], []
        if ctx.layer == 0 and "vision_cls_attention" in st.by_slot:
            for b, count in enumerate(k):
                alive = ctx.visual_positions(b)
                slots = st.slot[b, alive]
                cls = st.by_slot["vision_cls_attention"][b, slots].float()
                top = alive[torch.sort(cls, descending=True, stable=True).indices[:count]].sort().values
                clusters[b, st.slot[b, top]] = self._cluster(st.by_slot["vision_keys"][b, st.slot[b, top]].float(), count)
                keep.append(top)
            return Selection(keep, by_slot={"vitcop_cluster": clusters})
        key = ctx.keys.float().mean(1)  # (B, n, e): head-mean keys of the layer before the step
        saliency = -key.norm(dim=-1)
        for b, count in enumerate(k):
            alive = ctx.visual_positions(b)
            slots = st.slot[b, alive]
            if bool((clusters[b, slots] < 0).any()):  # no vision stage: cluster here, on LLM keys
                clusters[b, slots] = self._cluster(key[b, alive], count)
            own = clusters[b, slots]
            ids = own.unique().tolist()
            quota = _quota([int((own == c).sum()) for c in ids], count)
            chosen = []
            h_new = st.h[b].clone()
            for c, q in zip(ids, quota):
                members = alive[own == c]
                ranked = members[torch.sort(saliency[b, members], descending=True, stable=True).indices]
                kept, dropped = ranked[:q], ranked[q:]
                chosen.append(kept)
                if len(kept) and len(dropped):
                    sim = torch.nn.functional.normalize(key[b, dropped], dim=-1) @ torch.nn.functional.normalize(
                        key[b, kept], dim=-1).T  # fmt: skip
                    into = sim.argmax(1)
                    for j, pos in enumerate(kept):
                        group = torch.cat([pos[None], dropped[into == j]])
                        h_new[pos] = st.h[b, group].mean(0)
            chosen = torch.cat(chosen).sort().values
            keep.append(chosen)
            merged.append(h_new[chosen])
        return Selection(keep, hidden=merged, by_slot={"vitcop_cluster": clusters})

    def preset(self, layers):
        from paretobench.schedule import PruningSchedule

        early = min(layers - 1, max(1, round(2 * layers / 32)))
        deep = max(early + 1, round(0.75 * layers))
        steps = {0: 0.5, early: 0.25}
        if deep < layers:
            steps[deep] = 0.05
        return PruningSchedule.steps(layers, steps)
