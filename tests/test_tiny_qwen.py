"""tiny-qwen2.5-vl as built from scratch: native resolution (the image's size sets its visual
token count), saved and reloaded offline without torchvision, and exact under the engine."""

import pytest
import torch

from engine_checks import assert_keep_all_matches_model, assert_live_counts_follow_schedules
from paretobench.adapters import QwenVLAdapter, adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.models import tiny_qwen
from paretobench.models.loading import load_model
from paretobench.schedule import PruningSchedule

SIZES = [(64, 64), (128, 96), (256, 256)]  # -> 16, 48 and 256 visual tokens


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    processor = tiny_qwen.build_processor()
    model = tiny_qwen.build_model(processor, seed=3, text_layers=2, vision_layers=2)
    out = tmp_path_factory.mktemp("tiny-qwen")
    tiny_qwen.save(model, processor, out)
    return model, out


@pytest.fixture(scope="module")
def samples(synth_dir):
    rows = read_tsv(synth_dir / "synth8_relation.tsv")[:1] + read_tsv(synth_dir / "synth8_colour.tsv")[:2]
    sizes = {s.index: size for s, size in zip(rows, SIZES)}
    return rows, lambda s: s.image().resize(sizes[s.index])


def test_reloads_offline_with_identical_logits(saved, samples):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, out = saved
    loaded = load_model(str(out))  # AutoProcessor needs torchvision here; the loader falls back
    assert isinstance(loaded.model, Qwen2_5_VLForConditionalGeneration)
    rows, image_fn = samples
    a, b = adapter_for(model, loaded.processor), adapter_for(loaded.model, loaded.processor)
    inputs = a.encode(rows, image_fn).inputs
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
    assert isinstance(b, QwenVLAdapter)


def test_visual_tokens_follow_the_image_size_and_the_engine_is_exact(saved, samples):
    model, out = saved
    processor = load_model(str(out)).processor
    rows, image_fn = samples
    adapter = adapter_for(model, processor)
    encoded = adapter.encode(rows, image_fn)
    state = adapter.prepare(encoded)
    assert state.n_visual == [w * h // tiny_qwen.TOKEN_PIXELS**2 for w, h in SIZES] == [16, 48, 256]
    assert_keep_all_matches_model(model, adapter, encoded.inputs, state)
    assert_live_counts_follow_schedules(adapter, state, [PruningSchedule.parse("1:0.5", 2)])


def test_prompt_puts_the_image_after_the_question(saved, samples):
    _, out = saved
    processor = load_model(str(out)).processor
    rows, _ = samples
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": rows[0].prompt()}]}],
        add_generation_prompt=True,
    )
    assert text.startswith("<|im_start|>user\nQuestion: ")
    assert text.endswith("<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")
