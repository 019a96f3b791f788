"""Randomly initialised models with a real checkpoint's decoder shape, for timing only.

Prefill time depends on shapes (layers, widths, heads, token counts), not on weight values. To
measure how pruning saves time on a model the size users serve, without its multi-GB weights,
``with_decoder_shape`` rebuilds a loaded model (its class, vision tower config, processor and
token ids) around a random decoder of a named checkpoint's shape. Its outputs mean nothing;
its latencies are those of the real architecture at that size. The shapes below are those in
the published ``config.json`` of each checkpoint.
"""

from __future__ import annotations

import copy

from paretobench.models.loading import LoadedModel

# decoder fields of published checkpoints' config.json (text_config where nested)
SHAPES: dict[str, dict] = {
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                          num_attention_heads=16, num_key_value_heads=2, mrope_section=[16, 24, 24]),  # fmt: skip
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, mrope_section=[16, 24, 24]),  # fmt: skip
    "llava-1.5-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32),  # fmt: skip
}


def with_decoder_shape(loaded: LoadedModel, shape: str, *, dtype=None, device: str = "cpu",
                       seed: int = 0) -> LoadedModel:  # fmt: skip
    """``loaded``'s architecture and processor around a random decoder of checkpoint ``shape``."""
    import torch

    if shape not in SHAPES:
        raise ValueError(f"unknown decoder shape {shape!r} (known: {', '.join(SHAPES)})")
    fields = dict(SHAPES[shape])
    mrope = fields.pop("mrope_section", None)
    config = copy.deepcopy(loaded.model.config)
    text = config.text_config
    for k, v in fields.items():
        setattr(text, k, v)
    text.head_dim = text.hidden_size // text.num_attention_heads
    if hasattr(text, "layer_types") and text.layer_types is not None:
        text.layer_types = ["full_attention"] * text.num_hidden_layers
    rope = getattr(text, "rope_parameters", None)
    if isinstance(rope, dict) and "mrope_section" in rope:
        if mrope is None:
            raise ValueError(f"{shape!r} has no M-RoPE sections; give a shape of the same family")
        text.rope_parameters = {**rope, "mrope_section": mrope}
    if hasattr(config.vision_config, "out_hidden_size"):  # Qwen-VL's merger writes the decoder's width
        config.vision_config.out_hidden_size = text.hidden_size
    torch.manual_seed(seed)
    with torch.device(device):
        model = type(loaded.model)._from_config(config, dtype=dtype or torch.float32)
    model.eval()
    return LoadedModel(name=f"{loaded.name}@{shape}", path=loaded.path, model=model, processor=loaded.processor)
