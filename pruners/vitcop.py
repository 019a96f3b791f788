"""ViTCoP as its authors' code runs it on LLaVA-1.5 (chaser682/ViTCoP): prune in the vision
encoder, cluster what is left there, then prune twice inside the LLM by key norm.

- Vision stage (the step before decoder layer 0): keep the patches the vision tower's CLS token
  attends to most in the feature layer (``vision_cls_attention``, per slot), in image order,
  and cluster the kept ones on their keys in that layer (``vision_keys``) with ``vic``.
- Saliency in the LLM: the L2 norm of the head-mean post-RoPE key of the layer before the
  step, SMALLER norm = more salient (it needs only K, so attention itself can stay fused). No
  text signal is used.
- The first LLM step (2 of 32 layers in; "shallow") keeps tokens per cluster and merges the
  rest of each cluster into one token (``shallow_step``). Every later step ("deep", 22 of 32)
  is a plain top-k by saliency over all live visual tokens: no clusters, no merging.
- Without a vision stage in the schedule, the clusters are formed at the first LLM step, on
  the vision keys of every visual token: what the vision stage clusters when it keeps them all.

VIC, the clustering (official ``dc=8``, spatial constraint ``k=0.6``): distances
``sqrt(|x_i - x_j|^2 + 1e-8)`` on the raw keys (no normalisation), density ``rho_i = sum_j
exp(-(d_ij / dc)^2)`` including the token itself (so no density is ever 0, however far apart the
tokens are), ``delta_i`` = the distance to the nearest token whose density is AT LEAST rho_i
(ties count) among those within ``k`` on the patch grid (coordinates row / H, column / W), inf if
none; the ``max(1, int(share * n))`` tokens with the largest ``gamma = delta * rho`` are the
centres (label = rank); every other token takes the label of the first centre reached by
following nearest-denser links, or -1 if none is. The -1 tokens count as one more cluster.

The shallow step with R tokens to keep and K clusters (the -1 group included), per cluster
the sum of its members' key norms: if K > R, the R - 1 clusters with the smallest sums each
become one merged token and all other clusters together one more. Otherwise each cluster keeps
``quota`` tokens of smallest key norm (``_quota``: R - K shared by cluster size - 1) and its other
members become one merged token. A merged group's token sits at the group's median position
(the upper one of an even group) and holds ``h[median] + mean(h[group])``, the median included
in the mean. Kept tokens hold their states unchanged.

Ties (a sort or top-k of equal values) go to the earlier token everywhere, where the official
code leaves them to ``torch.topk``. Positions: the official code packs the sequence after the
vision stage (position ids 0..n-1), keeps those (gapped) at the shallow step and, at the deep
step, gives every token its index in the sequence entering that step; decoding continues from
the packed length on every layer. That is the engine's ``positions="step"``, the default here
(``positions="keep"`` keeps the original ids).

Settings of the official script for LLaVA-1.5-7B (576 patches, 32 layers), by average tokens:
192 keeps 288 after the vision stage, 253 from layer 2, 51 from layer 22, with 18% of the
vision stage's tokens as cluster centres; 128: 230 / 165 / 33, 15%; 64: 172 / 77 / 15, 12%.
``preset`` scales them to the decoder's depth. Qwen2-VL / Qwen2.5-VL towers have no CLS token:
the adapter gives the usual CLS-free substitute (the attention each token's patches RECEIVE in
the last block) and the mean of the patches' keys; the grid there is read from the M-RoPE
(height, width) positions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from paretobench.registry import PRUNERS
from pruners.base import Pruner, Selection

if TYPE_CHECKING:
    import torch

DC, REACH = 8.0, 0.6  # VIC's density bandwidth and spatial reach (grid units: the image's side is 1)
PATCHES, LAYERS, SHALLOW, DEEP = 576, 32, 2, 22  # where the official settings are given
# average tokens -> (kept after the vision stage, from the shallow step, from the deep step) of 576, centre share
SETTINGS = {192: (288, 253, 51, 0.18), 128: (230, 165, 33, 0.15), 64: (172, 77, 15, 0.12)}


def _distances(x: torch.Tensor, chunk: int = 1 << 24) -> torch.Tensor:
    """(n, n) ``sqrt(|x_i - x_j|^2 + 1e-8)``, from explicit differences (no ``|a|^2 + |b|^2 - 2ab``
    cancellation), a few rows at a time so that at most about ``chunk`` differences are held."""
    import torch

    n = x.shape[0]
    out = torch.empty(n, n, dtype=x.dtype, device=x.device)
    step = max(1, chunk // max(1, n * x.shape[1]))
    for s in range(0, n, step):
        out[s : s + step] = ((x[s : s + step, None] - x[None]) ** 2).sum(-1)
    return (out + 1e-8).sqrt()


def vic(x: torch.Tensor, grid: torch.Tensor, share: float, dc: float = DC,
        reach: float = REACH) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Density-peak clustering with a spatial constraint (see the module docstring): ``x`` (n, d)
    features, ``grid`` (n, 2) their normalised patch coordinates, ``share`` of them centres.
    Returns (n,) labels (-1 where no centre is reached) and the centres, label order."""
    import torch

    n = x.shape[0]
    if n == 0:
        empty = torch.empty(0, dtype=torch.long, device=x.device)
        return empty, empty
    dist = _distances(x.float())
    dist.fill_diagonal_(0)
    rho = torch.exp(-((dist / dc) ** 2)).sum(1)
    denser = rho[None, :] >= rho[:, None]  # [i, j]: j is at least as dense as i
    denser.fill_diagonal_(False)
    near = _distances(grid.float()) <= reach
    delta, parent = torch.where(denser & near, dist, torch.inf).min(1)  # ties: the first token
    centres = torch.sort(delta * rho, descending=True, stable=True).indices[: max(1, int(share * n))]
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    labels[centres] = torch.arange(len(centres), device=x.device)
    while True:  # each unlabelled token takes its denser neighbour's label once that has one
        todo = (labels < 0) & (labels[parent] >= 0)
        if not bool(todo.any()):
            return labels, centres
        labels[todo] = labels[parent[todo]]


def _quota(sizes: list[int], sums: list[float], k: int) -> list[int]:
    """The shallow step's per-cluster keep counts for K clusters of the given ``sizes``, K <= ``k``
    (and some cluster with two members or more): ``k - K`` tokens shared in proportion to each
    cluster's size - 1, rounded half to even and at most size - 1 (one member is always left to
    merge); what the rounding leaves over or short is given or taken one per cluster, in order of
    the clusters' key-norm ``sums`` (smallest first when giving, largest first when taking)."""
    import torch

    size = torch.tensor(sizes)
    free = k - len(sizes)
    weight = (size.float() - 1) / (int(size.sum()) - len(sizes))  # float32, as the official code rounds it
    room = (size - 1).clamp(min=0)
    q = torch.minimum((weight * free).round().long(), room)
    diff = free - int(q.sum())
    for i in torch.sort(torch.tensor(sums), descending=diff < 0, stable=True).indices.tolist():
        if diff == 0:
            break
        if diff > 0 and q[i] < room[i]:
            q[i] += 1
            diff -= 1
        elif diff < 0 and q[i] > 0:
            q[i] -= 1
            diff += 1
    return q.tolist()


def shallow_step(labels: torch.Tensor, norm: torch.Tensor, k: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The official shallow step over n tokens in sequence order (module docstring): their
    cluster ``labels`` and key ``norm``s, ``k`` to keep. Returns the indices kept as they are and
    the groups merged into one token each (indices ascending); together they make ``k`` tokens."""
    import torch

    ids = labels.unique()
    members = [torch.nonzero(labels == c).squeeze(1) for c in ids.tolist()]
    sums = [float(norm[m].sum()) for m in members]
    if len(ids) > k:
        order = torch.sort(torch.tensor(sums), stable=True).indices.tolist()
        rest = torch.cat([members[i] for i in order[k - 1 :]]).sort().values
        return labels[:0], [members[i] for i in order[: k - 1]] + [rest]
    kept, groups = [], []
    for m, q in zip(members, _quota([len(m) for m in members], sums, k)):
        ranked = m[torch.sort(norm[m], stable=True).indices]
        kept.append(ranked[:q])
        groups.append(ranked[q:].sort().values)
    return torch.cat(kept).sort().values, groups


@PRUNERS.register("vitcop",
                  doc="vision-stage CLS attention and VIC clusters, then K-norm per cluster, a deep top-k")
class ViTCoP(Pruner):
    name = "vitcop"
    version = 2
    score_rows = "none"
    # the keys it reads at an LLM step are those the layer before computed anyway (free); before
    # layer 0 it reads the vision tower's attention, not the decoder's: no step costs decoder FLOPs
    reads_keys = False
    needs_vision = True  # the adapter must provide the vision tower's CLS attention (or a substitute) and keys

    def __init__(self, setting: int = 192, merge: bool = True, deep_clusters: bool = False, positions: str = "step"):
        """``setting``: the official setting (average tokens 192, 128 or 64) that ``preset`` and
        the share of cluster centres follow. Not official, for ablations: ``merge=False`` leaves
        each merged group's median token as it is; ``deep_clusters=True`` applies the shallow
        step's rule (per-cluster quotas and merging) at every LLM step, not only the first;
        ``positions="keep"`` keeps the original position ids (the official numbering is "step")."""
        if setting not in SETTINGS:
            raise ValueError(f"unknown ViTCoP setting {setting}; valid: {', '.join(map(str, SETTINGS))}")
        if positions not in ("step", "keep"):
            raise ValueError(f"vitcop positions {positions!r}: valid: step (official), keep")
        self.setting, self.merge, self.deep_clusters, self.positions = setting, merge, deep_clusters, positions

    def params(self):
        return {"setting": self.setting, "merge": self.merge, "deep_clusters": self.deep_clusters,
                "positions": self.positions}  # fmt: skip

    def saliency(self, ctx) -> torch.Tensor:
        """(B, n): minus the L2 norm of the head-mean key (higher = keep)."""
        return -ctx.keys.float().mean(1).norm(dim=-1)

    def select(self, ctx, k):
        import torch

        st = ctx.state
        if "vision_keys" not in st.by_slot or "vision_cls_attention" not in st.by_slot:
            raise ValueError("ViTCoP needs the vision tower's CLS attention and keys: encode with vision_extras=True")
        if ctx.layer == 0:
            return self._vision_stage(ctx, k)
        labels = st.by_slot.get("vitcop_cluster")
        if labels is None:  # no vision stage ran: cluster every visual token here
            labels = _unlabelled(st)
            for b in range(len(k)):
                alive = ctx.visual_positions(b)
                labels[b, st.slot[b, alive]] = self._labels(ctx, b, alive)
        merged = st.by_slot.get("vitcop_merged", torch.zeros_like(labels)).clone()
        saliency = self.saliency(ctx)
        keep, hidden = [], []
        for b, count in enumerate(k):
            alive = ctx.visual_positions(b)
            h = None
            if count in (0, len(alive)):  # nothing to keep, or nothing to drop, in this row
                chosen = alive[:count]
            elif bool(merged[b].any()) and not self.deep_clusters:  # a deep step: global top-k
                chosen = alive[torch.sort(saliency[b, alive], descending=True, stable=True).indices[:count]]
            else:  # the shallow step
                chosen, h, is_group = self._shallow(st, b, alive, labels[b, st.slot[b, alive]], -saliency[b, alive],
                                                    count)  # fmt: skip
                merged[b, st.slot[b, chosen[is_group]]] = 1
            keep.append(chosen.sort().values)
            hidden.append(h)
        return Selection(keep, hidden=hidden, by_slot={"vitcop_cluster": labels, "vitcop_merged": merged})

    def _vision_stage(self, ctx, k) -> Selection:
        import torch

        st = ctx.state
        labels = _unlabelled(st)
        keep = []
        for b, count in enumerate(k):
            alive = ctx.visual_positions(b)
            cls = st.by_slot["vision_cls_attention"][b, st.slot[b, alive]].float()
            top = alive[torch.sort(cls, descending=True, stable=True).indices[:count]].sort().values
            labels[b, st.slot[b, top]] = self._labels(ctx, b, top)
            keep.append(top)
        return Selection(keep, by_slot={"vitcop_cluster": labels})

    def _labels(self, ctx, b: int, positions: torch.Tensor) -> torch.Tensor:
        """VIC's labels of row ``b``'s tokens at ``positions`` (in sequence order), clustered on
        their vision keys and patch-grid coordinates."""
        slots = ctx.state.slot[b, positions]
        return vic(ctx.state.by_slot["vision_keys"][b, slots], _grid(ctx, b)[slots], SETTINGS[self.setting][3])[0]

    def _shallow(self, st, b: int, alive, labels, norm, count: int):
        """The shallow step on row ``b``'s live visual tokens ``alive`` (their ``labels`` and key
        ``norm``s): the positions kept, in sequence order, their states, and which of them hold a
        merged group."""
        import torch

        kept, groups = shallow_step(labels, norm, count)
        medians = torch.stack([g[len(g) // 2] for g in groups])
        order = torch.sort(torch.cat([kept, medians])).indices
        is_group = order >= len(kept)
        chosen = alive[torch.cat([kept, medians])[order]]
        h = st.h[b]
        states = h[chosen].clone()
        if self.merge:
            sums = torch.stack([h[alive[m]] + h[alive[g]].mean(0) for m, g in zip(medians, groups)])
            states[is_group] = sums[order[is_group] - len(kept)]
        return chosen, states, is_group

    def preset(self, layers):
        """The official setting (``setting``) on a ``layers``-layer decoder: the shallow and deep
        steps at 2 and 22 of 32 layers scaled (rounded half up; the shallow one at layer 1 at the
        earliest, the deep one only if it falls after the shallow one and inside the decoder)."""
        from paretobench.schedule import PruningSchedule

        vision, shallow, deep, _ = SETTINGS[self.setting]
        at_shallow = max(1, math.floor(SHALLOW * layers / LAYERS + 0.5))
        at_deep = math.floor(DEEP * layers / LAYERS + 0.5)
        steps = {0: vision / PATCHES, at_shallow: shallow / PATCHES}
        if at_shallow < at_deep < layers:
            steps[at_deep] = deep / PATCHES
        return PruningSchedule.steps(layers, steps)


def _unlabelled(st) -> torch.Tensor:
    """(B, max Nv) cluster labels, none assigned yet."""
    import torch

    return torch.full((len(st.n_visual), max(st.n_visual)), -1, dtype=torch.long, device=st.slot.device)


def _grid(ctx, b: int) -> torch.Tensor:
    """(Nv, 2) every visual token's (row / H, column / W) on row ``b``'s patch grid: from the
    (height, width) M-RoPE positions where the decoder has them, else a square grid in raster
    order (LLaVA)."""
    import torch

    st = ctx.initial
    nv = st.n_visual[b]
    if st.pos.dim() == 3:
        at = torch.nonzero(st.slot[b] >= 0).squeeze(1)
        yx = st.pos[1:, b, at].T.float()
        yx = yx - yx.min(0).values
        out = torch.zeros(nv, 2, device=yx.device)
        out[st.slot[b, at]] = yx / (yx.max(0).values + 1)
        return out
    side = math.isqrt(nv)
    if side * side != nv:
        raise ValueError(f"ViTCoP's clustering needs a square patch grid; this image has {nv} visual tokens")
    s = torch.arange(nv, device=st.slot.device)
    return torch.stack([s // side, s % side], 1).float() / torch.tensor([side, side], device=s.device).float()
