"""The second embedded model, ``tiny-qwen2.5-vl``: how it is built from scratch.

A real ``Qwen2_5_VLForConditionalGeneration``: a windowed ViT whose 2x2 patch merger feeds the
decoder, 3-D M-RoPE, and native image resolution, so the number of visual tokens follows the
image (8x8 patches merged 2x2: one token per 16x16 pixels; 64x64 -> 16 tokens, 256x256 -> 256).
Same word-level vocabulary as ``tiny-llava``, Qwen's chat markup, the image after the question
(see ``tiny_llava.CHAT_TEMPLATE`` for why).

Transformers' Qwen2.5-VL processor also wants a video processor, which needs torchvision (no
CPU build): the processor here is built without one (``loading.image_only``), and the model
folder is written by ``save`` so that ``load_model`` reads it back with or without torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path

PATCH = 8
MERGE = 2
TOKEN_PIXELS = PATCH * MERGE  # one visual token per 16x16 pixels
MIN_PIXELS, MAX_PIXELS = 64 * 64, 256 * 256  # 16 to 256 visual tokens
QWEN_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    from paretobench.models.tiny_llava import word_tokenizer

    return word_tokenizer(QWEN_TOKENS, ("user", "assistant"), eos="<|im_end|>",
                          extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                                "vision_start_token": "<|vision_start|>",
                                                "vision_end_token": "<|vision_end|>"})  # fmt: skip


def build_processor():
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2,
                                               min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS,
                                               image_mean=[0.5] * 3, image_std=[0.5] * 3)  # fmt: skip
    from paretobench.models.loading import image_only

    return image_only(Qwen2_5_VLProcessor)(image_processor=image_processor, tokenizer=build_tokenizer(),
                                           chat_template=CHAT_TEMPLATE)  # fmt: skip


def build_config(processor, *, text_layers: int = 8, text_hidden: int = 128, vision_layers: int = 4):
    from transformers import Qwen2_5_VLConfig

    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_TOKENS}
    pairs = text_hidden // 4 // 2  # rotary frequency pairs per head
    t = pairs // 4  # split over (temporal, height, width) as 1:1.5:1.5, as Qwen2.5-VL's [16, 24, 24]
    text = dict(vocab_size=len(tok), hidden_size=text_hidden, intermediate_size=3 * text_hidden,
                num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=1024, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [t, (pairs - t + 1) // 2, (pairs - t) // 2]})  # fmt: skip
    vision = dict(depth=vision_layers, hidden_size=128, intermediate_size=384, num_heads=4, out_hidden_size=text_hidden,
                  patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2,
                  # windows of 4x4 merged tokens (64x64 pixels); the last layer attends to the whole image
                  window_size=4 * TOKEN_PIXELS, fullatt_block_indexes=[vision_layers - 1])  # fmt: skip
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )  # fmt: skip


def build_model(processor, seed: int = 0, **sizes):
    """A randomly initialised tiny Qwen2.5-VL for ``processor``'s vocabulary (deterministic in ``seed``)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(build_config(processor, **sizes)).eval()
    from paretobench.models.tiny_llava import with_token_ids

    return with_token_ids(model, processor.tokenizer)


def save(model, processor, out: str | Path) -> None:
    """Weights, config and the processor's parts (what ``save_pretrained`` would write, without the
    video processor it cannot save here)."""
    out = Path(out)
    model.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(processor.chat_template)


def embedded_dir() -> Path:
    return Path(__file__).resolve().parent / "embedded" / "tiny-qwen2.5-vl"
