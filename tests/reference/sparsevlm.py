"""SparseVLM as its official code runs (Gumpest/SparseVLMs, version "1_0", the default:
``modelling_sparse_llama.py``, ``score.py``, ``utils.py``), at batch 1.

- Raters, once, from the input embeddings: the text tokens after the image whose relevance
  (softmax over the text of visual . text, averaged over all visual tokens) is above the mean.
- At each pruning layer l the layer runs in full; its own attention map (head mean), from the
  raters' rows to the visual span and averaged over raters, ranks the visual tokens, and the top
  ``min(count, visual - 1)`` of the layer's OUTPUT stay, in sequence order.
- Recycling: of the dropped tokens, the ``int(0.3 * dropped) + 1`` best-scored are clustered
  (density peaks on distances divided by sqrt(C), density from the ``clusters`` nearest
  neighbours, self included) into ``int(candidates / 10) + 1`` clusters; each cluster's mean is
  a new token, the block of them placed after the kept visual tokens. Position ids are
  renumbered 0..n-1.

One liberty: the official clustering adds uniform noise of 1e-6 to the densities to break ties
(a step that makes one cluster ties every density at exp(0)); here ties go to the earlier
candidate, as in paretobench. The merged states do not depend on it; only which tied centre
names a cluster does.
"""

from __future__ import annotations

import torch

from reference.llava_loop import LlavaLoop, Sequence


def cluster_and_merge(x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, C) cluster means of the rows of ``x`` (N, C), in centre order, and the centres' rows."""
    c = x.shape[1]
    d = (x[:, None, :] - x[None, :, :]).norm(dim=-1) / c**0.5
    density = (-(d.topk(n, dim=-1, largest=False).values ** 2).mean(-1)).exp()
    denser = (density[None, :] > density[:, None]).to(x.dtype)  # [i, j]: j is denser than i
    parent = (d * denser + d.max() * (1 - denser)).min(-1).values
    centres = torch.sort(parent * density, descending=True, stable=True).indices[:n]
    assign = d[centres].argmin(0)
    assign[centres] = torch.arange(n)
    count = torch.zeros(n, dtype=x.dtype).index_add_(0, assign, torch.ones(len(x), dtype=x.dtype))
    total = torch.zeros(n, c, dtype=x.dtype).index_add_(0, assign, x)
    return total / (count[:, None] + 1e-6), centres


def sparsevlm(loop: LlavaLoop, steps: dict[int, int], *, recycle: bool = True):
    """``steps``: pruning layer l (its OUTPUT is pruned) -> visual tokens kept by ranking.
    Returns, per layer, the original visual indices at its input (a recycled token counts as its
    cluster's centre), the hidden states there, and the logits."""
    seq = loop.start
    lo, hi = seq.image_span
    relevance = (seq.h[0, lo:hi] @ seq.h[0, hi:].T).softmax(-1).mean(0)
    raters = torch.nonzero(relevance > relevance.mean()).squeeze(1)  # offsets after the image
    kept, states = [], []
    for i in range(loop.n_layers):
        kept.append(seq.visual[seq.visual >= 0].clone())
        states.append(seq.h.clone())
        h, attn = loop.layer(i, seq)
        if i not in steps:
            seq = Sequence(h, seq.pos, seq.visual)
            continue
        lo, hi = seq.image_span
        score = attn.mean(1)[0, raters + hi, lo:hi].mean(0)
        top = score.topk(min(steps[i], hi - lo - 1)).indices
        stay = torch.zeros(hi - lo, dtype=torch.bool)
        stay[top] = True
        keep = torch.nonzero(stay).squeeze(1) + lo
        new_h, new_visual = [h[:, keep]], [seq.visual[keep]]
        if recycle:
            dropped = torch.nonzero(~stay).squeeze(1)
            candidates = dropped[score[dropped].topk(int(len(dropped) * 0.3) + 1).indices]
            merged, centres = cluster_and_merge(h[0, candidates + lo], int(len(candidates) / 10) + 1)
            new_h.append(merged[None])
            new_visual.append(seq.visual[candidates[centres] + lo])
        h = torch.cat([h[:, :lo], *new_h, h[:, hi:]], 1)
        visual = torch.cat([seq.visual[:lo], *new_visual, seq.visual[hi:]])
        seq = Sequence(h, torch.arange(h.shape[1])[None], visual)
    return kept, states, loop.logits(seq.h)
