"""Analytic prefill FLOPs of a decoder-only language model (Llama family).

A multiply-add counts as 2 FLOPs (``torch.utils.flop_counter`` counts the same way). Per layer
with ``n`` live tokens, hidden size ``d``, ``h`` query heads and ``g`` key/value heads of size
``e``, MLP width ``f``:

    projections   2*n*d*(h*e)  (q) + 2 * 2*n*d*(g*e)  (k, v, grouped) + 2*n*(h*e)*d  (o)
    attention     2 * 2*n*n*h*e      (scores q.k and weighting by v, full n x n as SDPA runs it)
    SwiGLU MLP    3 * 2*n*d*f        (gate, up, down)

Norms, RoPE, softmax and residual adds are element-wise and left out, as FLOP counters do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, text_config) -> DecoderShape:
        c = text_config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return cls(
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            heads=c.num_attention_heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            head_dim=head_dim,
            intermediate=c.intermediate_size,
            vocab=c.vocab_size,
        )


def layer_flops(shape: DecoderShape, n: int) -> int:
    """FLOPs of one decoder layer over ``n`` tokens."""
    d, e = shape.hidden, shape.head_dim
    proj = 2 * n * d * (shape.heads * e) * 2 + 2 * 2 * n * d * (shape.kv_heads * e)
    attn = 2 * 2 * n * n * shape.heads * e
    mlp = 3 * 2 * n * d * shape.intermediate
    return proj + attn + mlp


def qk_projection_flops(shape: DecoderShape, n: int) -> int:
    """The q and k projections of one layer over ``n`` tokens (a pruner that scores with a
    layer's own projections, rather than those the previous layer computed anyway, pays this)."""
    return 2 * n * shape.hidden * (shape.heads + shape.kv_heads) * shape.head_dim


def score_rows_flops(shape: DecoderShape, rows: int, n: int) -> int:
    """Attention logits of ``rows`` query rows over ``n`` keys, every head."""
    return 2 * shape.heads * rows * n * shape.head_dim


def prefill_flops(shape: DecoderShape, tokens_per_layer) -> int:
    """Decoder-layer prefill FLOPs for the live token count at each layer's input."""
    tokens_per_layer = list(tokens_per_layer)
    if len(tokens_per_layer) != shape.layers:
        raise ValueError(f"need {shape.layers} per-layer token counts, got {len(tokens_per_layer)}")
    return sum(layer_flops(shape, n) for n in tokens_per_layer)


def lm_head_flops(shape: DecoderShape, positions: int = 1) -> int:
    """The output projection at ``positions`` positions (1 for the next-token prediction)."""
    return 2 * positions * shape.hidden * shape.vocab


def counting_mode():
    """``torch.utils.flop_counter.FlopCounterMode`` that also counts CPU flash attention.

    PyTorch's counter knows the CUDA SDPA kernels but not the CPU one that SDPA picks for
    unmasked causal attention, which it would count as 0 FLOPs.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def cpu_flash(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        b, h, s_q, d = query_shape  # keys may have fewer (grouped) heads; each query head reads them
        return 2 * 2 * b * h * s_q * key_shape[2] * d

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return FlopCounterMode(display=False, custom_mapping={op: cpu_flash})


def paper_eq2_flops(hidden: int, tokens_per_layer) -> int:
    """The VisPCO paper's Eq. 2: ``sum_i 24*N_i*D^2 + 4*N_i^2*D`` (a standard MHA layer with a
    4*D two-matrix FFN; no GQA, no SwiGLU). A named alternative to the exact count above."""
    return sum(24 * n * hidden**2 + 4 * n * n * hidden for n in tokens_per_layer)
