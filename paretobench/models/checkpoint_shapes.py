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

# decoder fields of published checkpoints' config.json (text_config where nested), each with the
# text model_type it belongs to: a shape is only put into a model of that family
SHAPES: dict[str, dict] = {
    "qwen2.5-vl-3b": dict(model_type="qwen2_5_vl_text", hidden_size=2048, intermediate_size=11008,
                          num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                          mrope_section=[16, 24, 24]),  # fmt: skip
    "qwen2.5-vl-7b": dict(model_type="qwen2_5_vl_text", hidden_size=3584, intermediate_size=18944,
                          num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                          mrope_section=[16, 24, 24]),  # fmt: skip
    "llava-1.5-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32),  # fmt: skip
    # head_dim 256 is not hidden/heads; five sliding-window layers (1024 keys) before each full one
    "gemma3-4b": dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                      sliding_window=1024,
                      layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(34)]),
}  # fmt: skip


def with_decoder_shape(loaded: LoadedModel, shape: str, *, dtype=None, device: str = "cpu",
                       seed: int = 0) -> LoadedModel:  # fmt: skip
    """``loaded``'s architecture and processor around a random decoder of checkpoint ``shape``."""
    import torch

    if shape not in SHAPES:
        raise ValueError(f"unknown decoder shape {shape!r} (known: {', '.join(SHAPES)})")
    fields = dict(SHAPES[shape])
    family, mrope = fields.pop("model_type"), fields.pop("mrope_section", None)
    config = copy.deepcopy(loaded.model.config)
    text = config.text_config
    if text.model_type != family:
        same = [name for name, f in SHAPES.items() if f["model_type"] == text.model_type]
        raise ValueError(f"{shape!r} is a {family} decoder and {loaded.name} has a {text.model_type} one "
                         f"(its family's shapes: {', '.join(same) or 'none'})")  # fmt: skip
    fields.setdefault("head_dim", fields["hidden_size"] // fields["num_attention_heads"])
    if getattr(text, "layer_types", None) is not None:  # the checkpoint's pattern, else every layer full
        fields.setdefault("layer_types", ["full_attention"] * fields["num_hidden_layers"])
    for k, v in fields.items():
        setattr(text, k, v)
    if mrope is not None:
        text.rope_parameters = {**text.rope_parameters, "mrope_section": mrope}
    if hasattr(config.vision_config, "out_hidden_size"):  # Qwen-VL's merger writes the decoder's width
        config.vision_config.out_hidden_size = text.hidden_size
    torch.manual_seed(seed)
    with torch.device(device):
        model = type(loaded.model)._from_config(config, dtype=dtype or torch.float32)
    model.eval()
    return LoadedModel(name=f"{loaded.name}@{shape}", path=loaded.path, model=model, processor=loaded.processor)
