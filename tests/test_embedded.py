"""The shipped tiny-llava: loads offline, is small, and is accurate where the card says."""

import pytest

from paretobench.data.datasets import load_dataset
from paretobench.evaluate import evaluate
from paretobench.models.card import grey_image, select_focus, select_random
from paretobench.models.loading import load_model
from paretobench.models.tiny_llava import embedded_dir


@pytest.fixture(scope="module")
def shipped():
    return load_model("tiny-llava")


@pytest.fixture(scope="module")
def subset():
    return load_dataset("synth8", limit=25).samples  # 25 per family


def test_shipped_files_are_small_and_complete():
    files = {p.name: p.stat().st_size for p in embedded_dir().iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md",
                 "training.json", "card.json"):  # fmt: skip
        assert name in files
    assert sum(files.values()) <= 20 * 2**20


def test_loads_offline_as_a_transformers_vlm(shipped):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    assert isinstance(shipped.model, LlavaForConditionalGeneration)
    assert isinstance(shipped.processor, LlavaProcessor)
    assert shipped.model.config.text_config.num_hidden_layers == 8


@pytest.mark.slow
def test_accurate_and_the_surviving_tokens_matter(shipped, subset):
    # bars for the model as shipped (58% on the full test split; chance is ~28%), not the issue's
    # 85% target, which it does not reach yet: see its card
    full = evaluate(shipped.model, shipped.processor, subset)
    assert full.scores["accuracy"] >= 0.5
    assert full.scores["per_category"]["count"] >= 0.9
    grey = evaluate(shipped.model, shipped.processor, subset, image_fn=grey_image)
    assert full.scores["accuracy"] - grey.scores["accuracy"] >= 0.1
    rand = evaluate(shipped.model, shipped.processor, subset, select=select_random(0.25))
    focus = evaluate(shipped.model, shipped.processor, subset, select=select_focus(0.25))
    assert rand.kept_visual_tokens == focus.kept_visual_tokens == 36
    assert focus.scores["accuracy"] > rand.scores["accuracy"]
