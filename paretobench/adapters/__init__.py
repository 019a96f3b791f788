"""Model adapters: what the engine needs to know about one VLM architecture.

An adapter builds the input sequence (text embeddings with the image features in the image
token slots, original position ids, left padding), computes the rotary tables for (gapped)
positions, calls a decoder layer with the right mask, and turns the last hidden state into
logits. ``adapter_for(model, processor)`` picks one by the model's config.

``LlavaAdapter`` covers ``LlavaForConditionalGeneration`` with Llama-family decoders (Llama,
Mistral, Vicuna; the embedded ``tiny-llava``). ``QwenVLAdapter`` covers Qwen2-VL and Qwen2.5-VL
(native-resolution images, so a different number of visual tokens per image, and 3-D M-RoPE
positions). ``Gemma3Adapter`` covers Gemma 3 (bidirectional image blocks, sliding-window layers
with their own rotary table). What they share (calling layers, masks, rotary tables, score-row
projections) is ``DecoderAdapter``.
"""

from __future__ import annotations

from paretobench.adapters.base import (
    ARCHITECTURES,
    DecoderAdapter,
    Encoded,
    UnsupportedModel,
    VisualSelect,
    architecture,
    chat_prompts,
    left_pad,
    text_token_counts,
    token_counts,
)
from paretobench.adapters.gemma3 import Gemma3Adapter
from paretobench.adapters.llava import LlavaAdapter
from paretobench.adapters.qwen import QwenVLAdapter

__all__ = ["ARCHITECTURES", "DecoderAdapter", "Encoded", "Gemma3Adapter", "LlavaAdapter", "QwenVLAdapter",
           "UnsupportedModel", "VisualSelect", "adapter_for", "architecture", "chat_prompts", "left_pad",
           "text_token_counts", "token_counts"]


def adapter_for(model, processor) -> DecoderAdapter:
    """The registered adapter that takes ``model`` (by its config), built on it."""
    cfg = model.config
    for cls in ARCHITECTURES:
        if cls.supports(cfg):
            return cls(model, processor)
    text = getattr(getattr(cfg, "text_config", None), "model_type", None)
    raise UnsupportedModel(
        f"no pruning adapter for model_type {cfg.model_type!r}" + (f" with a {text!r} decoder" if text else "")
        + "; supported: " + ", ".join(cls.describes for cls in ARCHITECTURES)
    )
