"""FastV as its official code runs (pkunlp-icler/FastV, ``fastv_kvcache.py``): after layer K-1,
the last position's head-mean attention over the image ranks the visual tokens; the top ones
stay, in sequence order, with their original position ids."""

from __future__ import annotations

import torch

from reference.llava_loop import LlavaLoop


def fastv(loop: LlavaLoop, steps: dict[int, int]):
    """``steps``: input layer K -> visual tokens kept from K on. Returns, per layer, the original
    visual indices alive at its input, the hidden states of the sequence there, and the logits."""
    seq, kept, states, attn = loop.start, [], [], None
    for i in range(loop.n_layers):
        if i in steps:
            lo, hi = seq.image_span
            score = attn.mean(1)[0, -1, lo:hi]  # the previous layer's map, last row, over the image
            top = score.topk(steps[i]).indices + lo
            index = torch.cat([torch.arange(lo), top, torch.arange(hi, seq.h.shape[1])]).sort().values
            seq = seq.take(index)
        kept.append(seq.visual[seq.visual >= 0].clone())
        states.append(seq.h.clone())
        h, attn = loop.layer(i, seq)
        seq = type(seq)(h, seq.pos, seq.visual)
    return kept, states, loop.logits(seq.h)
