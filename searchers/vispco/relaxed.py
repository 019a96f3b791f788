"""VisPCO's relaxed pruned forward: differentiable in the keep ratios, exact in its values.

Visual tokens are not dropped here; they are masked inside attention. At every layer the
pruner scores the live visual tokens (as it would in the engine) and a soft threshold decides
which survive (paper Eqs. 9-13):

- ``tau = sum_j w_j s_(j) / sum_j w_j`` with ``w_j = exp(-(j - k)^2 / (2 sigma^2))``, the
  scores sorted in descending order, ``k = keep * Nv`` real-valued (Eq. 9);
- a hard mask ``m = 1[s >= tau]`` forward, its soft twin ``sigmoid((s - tau) / T)`` backward
  (straight-through, Eqs. 11-12); masks multiply across layers, so a token once masked stays so.

Attention multiplies the key columns of its probabilities by the cumulative mask and
renormalises: with a 0/1 mask that IS the attention over the surviving tokens, so the forward
values equal the engine's physically pruned forward that keeps the same tokens (a test checks
it), while gradients reach ``keep`` through the thresholds. A layer whose target ``keep * Nv``
rounds to at least its live count prunes nothing (no threshold, so no erosion of a flat
schedule), as in the engine, which keeps ``round_half_up(keep * Nv)`` tokens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from paretobench.engine import Engine
from paretobench.sequence import SeqState
from pruners.base import ScoreContext

ATTENTION = "paretobench_soft_mask"


def soft_mask_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, key_mask=None,
                        **kwargs):  # fmt: skip
    """Attention whose probabilities are multiplied by ``key_mask`` (B, n) and renormalised;
    without a key mask it is plain SDPA."""
    if key_mask is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    logits = torch.matmul(query, key.transpose(2, 3)).float() * scaling  # (B, H, nq, n)
    n = key.shape[2]
    if attention_mask is None:  # the causal mask the kernel would apply itself
        nq = query.shape[2]
        attention_mask = torch.ones(nq, n, dtype=torch.bool, device=query.device).tril(n - nq)
    if attention_mask.dtype == torch.bool:
        logits = logits.masked_fill(~attention_mask, float("-inf"))
    else:
        logits = logits + attention_mask
    probs = logits.softmax(-1) * key_mask[:, None, None, :].float()
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, soft_mask_attention)


@contextlib.contextmanager
def soft_mask_attention_on(model):
    """Route the language model's attention through ``soft_mask_attention`` for a while."""
    _register()
    config = model.config.get_text_config()
    old = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = old


@dataclass(frozen=True)
class Relaxation:
    sigma: float = 10.0  # Gaussian kernel width, in token positions (paper: 10)
    temperature: float = 0.1  # of the straight-through sigmoid (paper: 0.1)
    # an option, off as in the paper: rank on each row's scores standardised over its live
    # visual tokens (zero mean, unit spread). The same tokens pass (an increasing affine map
    # moves the threshold with them), but T then means the same for every pruner (attention
    # rows are ~1/Nv, key norms ~10); with FastV's raw scores at T = 0.1 every soft mask sits
    # near 0.5 (measured: docs/notes/vispco-training.md)
    standardise: bool = False


def soft_threshold(sorted_scores: torch.Tensor, k: torch.Tensor, sigma: float,
                   counts: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Eq. 9: (B,) Gaussian-weighted mean of (B, n) descending scores around position ``k`` (B,)
    (1-based, real-valued); ``counts`` (B,): only the first ``counts[b]`` entries are scores."""
    n = sorted_scores.shape[1]
    top = torch.full_like(k, n, dtype=torch.float32) if counts is None else counts.float()
    # k stays within reach of the scores (beyond ~3 sigma past either end every weight would
    # underflow); between the last score and that bound the threshold still moves with k, so a
    # layer that prunes nothing still passes a gradient
    k = torch.minimum(torch.maximum(k.float(), torch.ones_like(top)), top + 3 * sigma)
    j = torch.arange(1, n + 1, device=sorted_scores.device, dtype=torch.float32)
    w = torch.exp(-((j[None, :] - k[:, None]) ** 2) / (2 * sigma**2))
    if counts is not None:
        w = w * (j[None, :] <= counts[:, None]).float()
    return (w * sorted_scores).sum(1) / w.sum(1).clamp_min(1e-30)


@dataclass
class RelaxedResult:
    logits: torch.Tensor  # (B, V) at the last position
    masks: list[torch.Tensor]  # per layer: (B, Nv) hard masks of the visual tokens (by slot) at its input
    soft: list[torch.Tensor]  # per layer: (B, Nv) the straight-through masks (values = masks)
    live: torch.Tensor  # (B, L) live visual tokens at each layer's input


def relaxed_prefill(engine: Engine, state: SeqState, keep: torch.Tensor, pruner,
                    relax: Relaxation = Relaxation()) -> RelaxedResult:  # fmt: skip
    """Prefill with visual tokens masked as ``keep`` (B, L) (or (L,)) says, differentiably."""
    a = engine.adapter
    layers = a.num_layers
    b_, n = state.valid.shape
    keep = keep.expand(b_, layers) if keep.dim() == 1 else keep
    if keep.shape != (b_, layers):
        raise ValueError(f"keep must be (B, {layers}) or ({layers},), got {tuple(keep.shape)}")
    nv = torch.tensor(state.n_visual, dtype=torch.float32, device=keep.device)
    visual, slot = state.visual, state.slot
    width = max(state.n_visual)
    # per position: 1 for text (and padding, masked by the attention mask anyway), the
    # cumulative straight-through mask for visual tokens
    mask = torch.ones(b_, n, dtype=keep.dtype, device=keep.device)
    hard = torch.ones(b_, n, dtype=torch.bool, device=keep.device)
    masks, soft, live = [], [], []
    captured: dict = {}
    # with gradients wanted, every layer gets a threshold (and pays for scoring), so that a
    # layer pruning nothing yet still learns what pruning there would cost; without, only
    # layers that prune score their tokens
    learns = torch.is_grad_enabled() and keep.requires_grad
    # a pruner that renumbers positions after a step (PyramidDrop, SparseVLM) gets them here from
    # the hard mask: the surviving tokens numbered 0..n-1, as the engine numbers them once dropped
    repack = getattr(pruner, "positions", "keep") == "repack" and state.pos.dim() == 2
    with soft_mask_attention_on(a.model):
        for i in range(layers):
            counts = (hard & visual).sum(1)  # (B,) live visual tokens
            target = keep[:, i] * nv
            prunes = bool((target.detach() < counts.float() - 0.5).any())
            if prunes or learns:
                if i == 0 or getattr(pruner, "score_layer", "previous") == "current":
                    qk, source = (lambda st=state, layer=i: a.project_qk(layer, st)), i
                else:
                    q, k = captured.pop("q"), captured.pop("k")
                    qk, source = (lambda st=state, layer=i - 1, q=q, k=k: a.rope_qk(layer, st, q, k)), i - 1
                with torch.no_grad():
                    ctx = ScoreContext(engine, state, i, qk, source, live=hard)
                    scores = pruner.scores(ctx).float()  # (B, n)
                alive = hard & visual
                if relax.standardise:
                    scores = _standardised(scores, alive)
                low = scores.masked_fill(~alive, float("inf")).min(1, keepdim=True).values - 1
                scores = scores.masked_fill(~alive, 0.0) + low * (~alive)  # masked tokens sort last
                ranked = scores.masked_fill(~visual, float("-inf")).sort(1, descending=True).values
                ranked = torch.where(torch.isfinite(ranked), ranked, low)
                tau = soft_threshold(ranked, target, relax.sigma, counts)  # (B,)
                step_hard = scores >= tau[:, None]
                step_soft = torch.sigmoid((scores - tau[:, None]) / relax.temperature)
                step = step_soft + (step_hard.to(step_soft.dtype) - step_soft).detach()
                # rows that prune nothing here keep what they have (value 1), but their soft
                # mask still says what raising the threshold would cost
                row = (target.detach() < counts.float() - 0.5)[:, None]
                keep_all = step_soft + (1.0 - step_soft).detach()
                step = torch.where(row, step, keep_all)
                # tokens masked at an earlier layer stay masked through that layer's factor; here
                # they get a constant 1, so the earlier step's gradient (what keeping such a token
                # would have changed) reaches every later layer instead of stopping here
                step = torch.where(alive, step, torch.ones_like(step))
                mask = mask * step
                hard = hard & (~visual | ~row | step_hard)
                if repack:
                    live_now = hard & state.valid
                    state = replace(state, pos=(live_now.long().cumsum(1) - 1).masked_fill(~live_now, 1))
            masks.append(_by_slot(hard & visual, slot, width))
            soft.append(_by_slot(mask, slot, width, visual))
            live.append((hard & visual).sum(1))
            capture = i + 1 < layers and getattr(pruner, "score_layer", "previous") == "previous"
            hooks = a.capture_qk(i, captured) if capture else []
            try:
                h = a.layers[i](state.h, attention_mask=a.prefill_mask(i, state),
                                position_ids=a.layer_positions(state.pos),
                                position_embeddings=a.rope(state.h, state.pos, i), key_mask=mask)  # fmt: skip
            finally:
                for hk in hooks:
                    hk.remove()
            state = replace(state, h=h)
    logits = a.logits(state.h[:, -1])
    return RelaxedResult(logits, masks, soft, torch.stack(live, 1))


def _standardised(scores: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Per row, ``(s - mean) / std`` over the ``alive`` entries (others are left as they are)."""
    w = alive.to(scores.dtype)
    count = w.sum(1, keepdim=True).clamp_min(1)
    mean = (scores * w).sum(1, keepdim=True) / count
    std = (((scores - mean) ** 2 * w).sum(1, keepdim=True) / count).sqrt().clamp_min(1e-12)
    return torch.where(alive, (scores - mean) / std, scores)


def _by_slot(values: torch.Tensor, slot: torch.Tensor, width: int, visual: torch.Tensor | None = None):
    """(B, n) per-position values -> (B, width) per visual slot."""
    visual = slot >= 0 if visual is None else visual
    out = torch.zeros(values.shape[0], width, dtype=values.dtype, device=values.device)
    rows, cols = torch.nonzero(visual, as_tuple=True)
    return out.index_put((rows, slot[rows, cols]), values[rows, cols])
