"""ViTCoP as its official code runs it (chaser682/ViTCoP, LLaVA-1.5: ``clip_encoder.py``,
``multimodal_encoder/utils.py``, ``vitcop_modeling_llama.py``), written anew for a batch-1
``LlavaForConditionalGeneration``, eager attention:

1. the vision tower's feature layer: the CLS row of its attention map summed over heads keeps
   the top patches, in image order; VIC clusters them on that layer's keys (``k_proj`` output)
   and their patch-grid coordinates;
2. the language model layer by layer; its keys are read by a hook on ``k_proj`` (RoPE applied
   here); the first step after the vision stage shares its tokens over the clusters and merges
   each cluster's rest, every later one keeps the smallest key norms.

Ties in a top-k go to whatever ``torch.topk`` gives (as in the official code); sorts are
stable. ``positions``: "official" numbers the tokens as the official code does (0..n-1 after
the vision stage, the index in the sequence entering each later step), "original" keeps every
token's position in the full sequence (what paretobench's engine does).

Nothing here comes from paretobench's engine or pruners.
"""

from __future__ import annotations

import math

import torch


def pairwise(x: torch.Tensor) -> torch.Tensor:
    """VIC's distances: ``sqrt(sum((x_i - x_j)^2) + 1e-8)``, by broadcasting."""
    return torch.sqrt(torch.sum((x.unsqueeze(1) - x.unsqueeze(0)) ** 2, dim=2) + 1e-8)


def vic(x: torch.Tensor, pos: torch.Tensor, percentage: float, dc: float = 8.0, k: float = 0.6):
    """VIC on features ``x`` (n, d) at grid coordinates ``pos`` (n, 2): (labels, centres)."""
    n = x.shape[0]
    dist = torch.clamp(pairwise(x), min=0.0)
    dist.fill_diagonal_(0)
    rho = torch.exp(-((dist / dc) ** 2)).sum(dim=1)
    wide = rho.unsqueeze(1).expand(n, n)
    compare = ~torch.gt(wide, wide.t())  # [i, j]: rho_i is not above rho_j
    compare.fill_diagonal_(False)
    spatial = torch.clamp(pairwise(pos), min=0.0) <= k
    delta, nearest = torch.min(torch.where(compare & spatial, dist, torch.full_like(dist, float("inf"))), dim=1)
    gamma = delta * rho
    centres = torch.argsort(-gamma, stable=True)[: max(1, int(percentage * n))]
    labels = torch.full((n,), -1, dtype=torch.long)
    labels[centres] = torch.arange(len(centres))
    unassigned = labels == -1
    while True:
        update = unassigned & (labels[nearest] != -1)
        if not update.any():
            break
        labels[update] = labels[nearest[update]]
        unassigned = labels == -1
    labels[centres] = torch.arange(len(centres))
    return labels, centres


def grid(n: int) -> torch.Tensor:
    """(n, 2) raster-order (row / H, column / W) of a square patch grid."""
    side = math.isqrt(n)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([yy, xx], dim=-1).reshape(-1, 2).float() / torch.tensor([side, side], dtype=torch.float)


def shallow(labels: torch.Tensor, norm: torch.Tensor, r: int):
    """The official shallow selection over the image block: (kept indices, merged groups), as
    indices into the block."""
    ids = torch.unique(labels)
    big_k = ids.size(0)
    sums = torch.stack([norm[labels == c].sum() for c in ids])
    sizes = torch.tensor([int((labels == c).sum()) for c in ids])
    kept, groups = [], []
    if big_k > r:
        chosen = ids[torch.topk(sums, k=r - 1, largest=False).indices]
        for c in chosen:
            groups.append(torch.nonzero(labels == c).squeeze(1))
        others = [c for c in ids.tolist() if c not in chosen.tolist()]
        groups.append(torch.cat([torch.nonzero(labels == c).squeeze(1) for c in others]).sort().values)
        return kept, groups
    weights = (sizes.float() - 1) / (sizes.sum() - big_k)
    quotas = torch.minimum((weights * (r - big_k)).round().long(), torch.clamp(sizes - 1, min=0))
    diff = (r - big_k) - int(quotas.sum())
    if diff != 0:
        for i in torch.argsort(sums, descending=diff < 0, stable=True):
            if diff > 0 and quotas[i] < sizes[i] - 1:
                quotas[i] += 1
                diff -= 1
            elif diff < 0 and quotas[i] > 0:
                quotas[i] -= 1
                diff += 1
            if diff == 0:
                break
    for i, c in enumerate(ids):
        members = torch.nonzero(labels == c).squeeze(1)
        count = min(int(quotas[i]), len(members) - 1)
        rest = members
        if count > 0:
            top = torch.topk(norm[members], k=count, largest=False).indices
            kept += members[top].tolist()
            left = torch.ones(len(members), dtype=torch.bool)
            left[top] = False
            rest = members[left]
        groups.append(rest)
    return kept, groups


def _rotate(t, cos, sin):
    half = t.shape[-1] // 2
    return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin


@torch.no_grad()
def vitcop(model, inputs, steps: dict[int, int], percentage: float, positions: str = "original"):
    """``steps``: input layer -> visual tokens alive from there on (layer 0: the vision stage;
    the first later one: the shallow step; the rest: deep steps). Returns per layer the original
    visual indices alive at its input (sequence order) and the whole sequence's hidden states
    there, the final logits, and the vision stage's cluster labels."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        return _run(model, inputs, steps, percentage, positions)
    finally:
        model.set_attn_implementation(before)


def _run(model, inputs, steps, percentage, positions):
    cfg = model.config
    feature = cfg.vision_feature_layer  # a negative index, as LLaVA-1.5's -2
    tower = model.model.vision_tower
    layers = getattr(tower, "vision_model", tower).encoder.layers
    seen = {}
    hook = layers[feature].self_attn.k_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("k", o))
    try:
        out = tower(inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
    finally:
        hook.remove()
    n_patch = out.hidden_states[feature].shape[1] - 1
    cls = out.attentions[feature][:, :, 0, 1:].sum(dim=1)[0]
    keep = torch.topk(cls, steps.get(0, n_patch)).indices.sort().values
    labels, _ = vic(seen["k"][0, 1:][keep], grid(n_patch)[keep], percentage)
    feats = model.model.multi_modal_projector(out.hidden_states[feature][:, 1:])[0]

    lm = model.model.language_model
    ids = inputs["input_ids"][0]
    image = torch.nonzero(ids == cfg.image_token_id).squeeze(1)
    h = lm.embed_tokens(ids)[None].clone()
    h[0, image] = feats.to(h.dtype)
    visual = torch.full((len(ids),), -1, dtype=torch.long)
    visual[image] = torch.arange(len(image))
    index = torch.cat([torch.arange(image[0]), image[keep], torch.arange(image[-1] + 1, len(ids))])
    h, visual = h[:, index], visual[index]
    pos = index[None] if positions == "original" else torch.arange(len(index))[None]
    label = torch.full((n_patch,), -1, dtype=torch.long)
    label[keep] = labels

    kept, states, key, first = [], [], None, True
    for i, layer in enumerate(lm.layers):
        if i in steps and i > 0:
            at = torch.nonzero(visual >= 0).squeeze(1)
            lo, hi = int(at[0]), int(at[-1]) + 1
            norm = key.mean(dim=1).norm(p=2, dim=-1)[0][lo:hi]
            if first:
                sel, groups = shallow(label[visual[lo:hi]], norm, steps[i])
                mids = [int(g.sort().values[len(g) // 2]) for g in groups]  # the upper median of an even group
                merged = {m + lo: h[:, m + lo] + h[:, g + lo].mean(dim=1) for m, g in zip(mids, groups)}
                middle = torch.tensor(sorted([s + lo for s in sel] + list(merged)), dtype=torch.long)
                h = h.clone()
                for m, value in merged.items():
                    h[:, m] = value
                first = False
            else:
                middle = torch.topk(norm, steps[i], largest=False).indices + lo
            index = torch.cat([torch.arange(lo), middle, torch.arange(hi, h.shape[1])]).unique(sorted=True)
            h, visual = h[:, index], visual[index]
            # officially the index in the sequence entering the step (after the vision stage that is
            # the position itself: that sequence is numbered 0..n-1)
            pos = pos[:, index] if positions == "original" else index[None]
        kept.append(visual[visual >= 0].clone())
        states.append(h.clone())
        n = h.shape[1]
        mask = torch.full((n, n), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None]
        cos, sin = lm.rotary_emb(h, pos)
        grabbed = {}
        hk = layer.self_attn.k_proj.register_forward_hook(lambda m, a, o: grabbed.__setitem__("k", o))
        try:
            h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=(cos, sin))
        finally:
            hk.remove()
        attn = layer.self_attn
        k = grabbed["k"].view(1, n, -1, attn.head_dim).transpose(1, 2)
        key = _rotate(k, cos[:, None], sin[:, None])
    logits = model.lm_head(lm.norm(h[:, -1]))
    return kept, states, logits, label
