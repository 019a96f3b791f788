"""Timing-only models with a published checkpoint's decoder shape (built on the meta device)."""

import pytest

from paretobench.flops import DecoderShape
from paretobench.models.loading import load_model
from paretobench.models.checkpoint_shapes import SHAPES, with_decoder_shape


def _decoder_params(model) -> int:
    return sum(p.numel() for p in model.model.language_model.layers.parameters())


@pytest.mark.parametrize("embedded, shape, params", [
    # Qwen2.5-3B: 36 x (q/o 2048^2 + k/v 2048x256, biases on q/k/v, SwiGLU 3 x 2048x11008, 2 norms)
    ("tiny-qwen2.5-vl", "qwen2.5-vl-3b", 36 * (2 * 2048 * 2048 + 2 * 2048 * 256 + 2048 + 2 * 256
                                                + 3 * 2048 * 11008 + 2 * 2048)),
    # Llama-7B layers (LLaVA-1.5-7B's Vicuna): no biases, full multi-head attention
    ("tiny-llava", "llava-1.5-7b", 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096)),
    # Gemma 3 4B: 8 query heads and 4 kv heads of 256 (not 2560 / 8), q/k norms of 256, GeGLU, 4 norms
    ("tiny-gemma3", "gemma3-4b", 34 * (2 * 2560 * 8 * 256 + 2 * 2560 * 4 * 256 + 2 * 256
                                       + 3 * 2560 * 10240 + 4 * 2560)),
])  # fmt: skip
def test_a_shaped_decoder_has_the_checkpoints_layers(embedded, shape, params):
    loaded = with_decoder_shape(load_model(embedded), shape, device="meta")
    assert _decoder_params(loaded.model) == params
    got = DecoderShape.from_config(loaded.model.config.text_config)
    want = SHAPES[shape]
    assert (got.layers, got.hidden, got.heads, got.kv_heads) == (
        want["num_hidden_layers"], want["hidden_size"], want["num_attention_heads"], want["num_key_value_heads"])
    assert got.head_dim == want.get("head_dim", got.hidden // got.heads)
    assert loaded.processor is not None and loaded.name == f"{embedded}@{shape}"


def test_gemma3_keeps_its_checkpoints_sliding_window_layers():
    loaded = with_decoder_shape(load_model("tiny-gemma3"), "gemma3-4b", device="meta")
    text = loaded.model.config.text_config
    full = [i for i, kind in enumerate(text.layer_types) if kind == "full_attention"]
    assert full == [5, 11, 17, 23, 29] and len(text.layer_types) == 34
    layers = loaded.model.model.language_model.layers
    assert [layers[i].self_attn.sliding_window for i in (0, 5)] == [1024, None]


def test_shapes_of_another_family_and_unknown_names_are_refused():
    qwen = load_model("tiny-qwen2.5-vl")
    with pytest.raises(ValueError, match=r"llama decoder .* \(its family's shapes: qwen2.5-vl-3b, qwen2.5-vl-7b"):
        with_decoder_shape(qwen, "llava-1.5-7b", device="meta")
    with pytest.raises(ValueError, match="gemma3_text decoder"):
        with_decoder_shape(load_model("tiny-llava"), "gemma3-4b", device="meta")
    with pytest.raises(ValueError, match="unknown decoder shape"):
        with_decoder_shape(qwen, "qwen9", device="meta")
