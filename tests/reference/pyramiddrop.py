"""PyramidDrop as its official code runs (Cooperx521/PyramidDrop, ``modeling_llama_pdrop.py``,
``pdrop_rank_drop``): before each stage's first layer r, that layer's own queries and keys of its
input rank the visual tokens by the last instruction token's head-mean attention (causal mask,
fp32 softmax over every key); the top ones stay in sequence order and the position ids are
renumbered 0..n-1."""

from __future__ import annotations

import math

import torch

from reference.llava_loop import LlavaLoop


def pyramiddrop(loop: LlavaLoop, steps: dict[int, int]):
    """``steps``: stage layer r -> visual tokens kept from r on. Returns what ``fastv`` returns."""
    seq, kept, states = loop.start, [], []
    for i in range(loop.n_layers):
        if i in steps:
            lo, hi = seq.image_span
            q, k = loop.qk(i, seq)
            logits = q[0, :, -1:] @ k[0].transpose(1, 2) / math.sqrt(q.shape[-1])  # (H, 1, n)
            score = logits.softmax(-1, dtype=torch.float32).mean(0)[0, lo:hi]
            top = score.topk(steps[i]).indices.sort().values + lo
            seq = seq.take(torch.cat([torch.arange(lo), top, torch.arange(hi, seq.h.shape[1])]))
            seq.pos = torch.arange(seq.h.shape[1])[None]
        kept.append(seq.visual[seq.visual >= 0].clone())
        states.append(seq.h.clone())
        h, _ = loop.layer(i, seq)
        seq = type(seq)(h, seq.pos, seq.visual)
    return kept, states, loop.logits(seq.h)
