"""The embedded default model, ``tiny-llava``: how it is built from scratch.

A real ``LlavaForConditionalGeneration`` (CLIP-style vision tower, two-layer projector, Llama
decoder) with a word-level tokenizer and a CLIP image processor, small enough to train on two
CPU cores and to ship inside the package. 96x96 images in 8x8 patches give 144 visual tokens
against ~40 prompt tokens, so visual tokens dominate the prefill, as in real VLMs.
"""

from __future__ import annotations

import re
from pathlib import Path

from paretobench.data import synth
from paretobench.data.prompt import MCQ_SUFFIX

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
# The image goes AFTER the question: causal attention then lets every image token see what is
# asked, so "find the named object, read another attribute" becomes a local comparison in each
# image token plus pooling at the answer, which a model this small learns; image-first prompts
# make it bind across ~30 tokens of options and boilerplate, which it did not learn in an hour.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% else %} ASSISTANT: {{ message['content'][0]['text'] if message['content'] is not string else message['content'] }}</s>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_WORD = re.compile(r"\w+|[^\w\s]+")  # what the tokenizer's Whitespace pre-tokenizer splits on


def vocabulary() -> list[str]:
    """Every word the synth8 prompts and answers use, in a fixed order."""
    texts = [MCQ_SUFFIX, "Hint: Question: Options: USER: ASSISTANT:", " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ")]
    texts += list(synth.COLOURS) + list(synth.SHAPES) + list(synth.RELATIONS) + list(synth.WORDS)
    texts += list(synth.GLYPHS) + ["yes no objects object"] + [f"{s}s" for s in synth.SHAPES]
    for family in synth.FAMILIES:  # the question templates, with every substitution they use
        for q, _, _ in synth.generate(family, seed=0, n=200):
            texts.append(q.question)
    words = {w for t in texts for w in _WORD.findall(t)}
    return list(SPECIAL_TOKENS) + sorted(words)


def word_tokenizer(special: tuple[str, ...], roles: tuple[str, str], *, eos: str, extra_special_tokens: dict):
    """The word-level tokenizer of the embedded models other than tiny-llava: synth8's vocabulary
    (without LLaVA's image token) followed by the architecture's ``special`` tokens and its chat
    ``roles``, left-padded; ``eos`` ends an answer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [w for w in vocabulary() if w != IMAGE_TOKEN]
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*words, *special, *roles]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token=eos,
                                   pad_token="<pad>", padding_side="left", model_max_length=512,
                                   extra_special_tokens=extra_special_tokens)  # fmt: skip


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=256,
    )


def build_processor():
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    size = {"height": synth.IMAGE_SIZE, "width": synth.IMAGE_SIZE}
    image_processor = CLIPImageProcessorPil(
        size=size, crop_size=size, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=synth.PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_config(vocab_size: int, *, text_layers: int = 8, text_hidden: int = 128, vision_layers: int = 4):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        image_size=synth.IMAGE_SIZE,
        patch_size=synth.PATCH,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=text_hidden,
        intermediate_size=3 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in most current VLM decoders
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=SPECIAL_TOKENS.index(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def build_model(processor, seed: int = 0, **sizes):
    """A randomly initialised tiny LLaVA for ``processor``'s vocabulary (deterministic in ``seed``)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(len(processor.tokenizer), **sizes))
    return with_token_ids(model, processor.tokenizer)


def with_token_ids(model, tok):
    """``model`` generating with ``tok``'s padding, end and start tokens."""
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


def save(model, processor, out: str | Path) -> None:
    model.save_pretrained(out)
    processor.save_pretrained(out)


def embedded_dir() -> Path:
    """Where the shipped, trained weights live inside the package."""
    return Path(__file__).resolve().parent / "embedded" / "tiny-llava"
