"""The third embedded model, ``tiny-gemma3``: how it is built from scratch.

A real ``Gemma3ForConditionalGeneration``: a SigLIP tower (no class token) whose patches the
multi-modal projector average-pools to a fixed count of visual tokens, then RMS-normalises and
projects; a Gemma 3 decoder with per-head q/k norms, sandwich norms around attention and MLP,
embeddings scaled by sqrt(hidden), sliding-window layers (three of every four) with their own
rotary table, and bidirectional attention among one image's tokens. Same word-level vocabulary
as ``tiny-llava``, Gemma's turn markup, the image after the question (see
``tiny_llava.CHAT_TEMPLATE`` for why).

96x96 images in 8x8 patches give 144 patches; the projector keeps all 144 as visual tokens (its
pooling kernel is 1 here: pooled 2x2 or more as Gemma 3 pools its 64x64 patches, 36 or fewer
tokens would leave visual tokens a minority of the prefill, and at 4x4-pixel patches the tower
costs seven times as much to train).

Two settings keep what Gemma 3 4B's sizes give it at this model's small ones (measured on a first
run that had neither, docs/notes/embedded-model-training.md):
- the sliding window (256 positions) is longer than any synth8 prompt (at most 189 tokens), as
  Gemma 3 4B's 1024 is longer than most prompts. With a 96-position window the answer position
  saw neither the question nor a third of the image in six of the eight layers. The engine's
  sliding-window masks are tested on a tiny config whose window cuts through the image
  (``tests/test_gemma3_adapter.py``).
- ``query_pre_attn_scalar`` is head_dim^2 / 256, so that with unit q/k-norm scales an attention
  logit spans up to 16 as in Gemma 3 4B (head_dim 256, scalar 256), not sqrt(32) = 5.7: at the
  latter the trained answer position never put more than a quarter of a head's attention on
  the object asked about.
"""

from __future__ import annotations

from pathlib import Path

from paretobench.data import synth

BOI, IMAGE, EOI = "<start_of_image>", "<image_soft_token>", "<end_of_image>"
TURN = ("<start_of_turn>", "<end_of_turn>")
SPECIAL = (BOI, IMAGE, EOI, *TURN)
VISUAL_TOKENS = (synth.IMAGE_SIZE // synth.PATCH) ** 2  # 144
SLIDING_WINDOW = 256  # longer than any synth8 prompt (see above)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'image' %}" + BOI + "{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_tokenizer():
    from paretobench.models.tiny_llava import word_tokenizer

    return word_tokenizer(SPECIAL, ("user", "model"), eos=TURN[1],
                          extra_special_tokens={"boi_token": BOI, "image_token": IMAGE, "eoi_token": EOI,
                                                "start_of_turn": TURN[0]})  # fmt: skip


def build_processor():
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    size = {"height": synth.IMAGE_SIZE, "width": synth.IMAGE_SIZE}
    image_processor = Gemma3ImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Gemma3Processor(image_processor=image_processor, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE,
                           image_seq_length=VISUAL_TOKENS)  # fmt: skip


def build_config(processor, *, text_layers: int = 8, text_hidden: int = 128, vision_layers: int = 4):
    from transformers import Gemma3Config

    tok = processor.tokenizer
    # Gemma 3's pattern: five sliding-window layers to one global; here three to one
    types = ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(text_layers)]
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 100_000.0}}  # fmt: skip
    heads, head_dim = 4, text_hidden // 4
    text = dict(vocab_size=len(tok), hidden_size=text_hidden, intermediate_size=3 * text_hidden,
                num_hidden_layers=text_layers, num_attention_heads=heads, num_key_value_heads=2, head_dim=head_dim,
                query_pre_attn_scalar=max(1, head_dim**2 // 256), sliding_window=SLIDING_WINDOW, layer_types=types,
                rope_parameters=rope, max_position_embeddings=512, rms_norm_eps=1e-6,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    vision = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=vision_layers, num_attention_heads=4,
                  image_size=synth.IMAGE_SIZE, patch_size=synth.PATCH, vision_use_head=False)  # fmt: skip
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=VISUAL_TOKENS,
                        image_token_id=tok.convert_tokens_to_ids(IMAGE), boi_token_id=tok.convert_tokens_to_ids(BOI),
                        eoi_token_id=tok.convert_tokens_to_ids(EOI), tie_word_embeddings=False)  # fmt: skip


def build_model(processor, seed: int = 0, **sizes):
    """A randomly initialised tiny Gemma 3 for ``processor``'s vocabulary (deterministic in ``seed``)."""
    import torch
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(build_config(processor, **sizes)).eval()
    with torch.no_grad():  # initialised to zeros, which would make every visual token the same
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        proj.normal_(std=proj.shape[0] ** -0.5)
    from paretobench.models.tiny_llava import with_token_ids

    return with_token_ids(model, processor.tokenizer)


def save(model, processor, out: str | Path) -> None:
    model.save_pretrained(out)
    processor.save_pretrained(out)


def embedded_dir() -> Path:
    return Path(__file__).resolve().parent / "embedded" / "tiny-gemma3"
