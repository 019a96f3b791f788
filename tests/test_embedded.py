"""The shipped tiny-llava: loads offline, is small, and is accurate where the card says."""

import pytest

from paretobench.data.datasets import load_dataset
from paretobench.evaluate import evaluate
from paretobench.models.card import select_focus, select_random
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
    full = evaluate(shipped.model, shipped.processor, subset)
    assert full.scores["accuracy"] >= 0.8
    assert min(full.scores["per_category"].values()) >= 0.6
    rand = evaluate(shipped.model, shipped.processor, subset, select=select_random(0.25))
    focus = evaluate(shipped.model, shipped.processor, subset, select=select_focus(0.25))
    assert rand.kept_visual_tokens == focus.kept_visual_tokens == 36
    assert full.scores["accuracy"] - rand.scores["accuracy"] >= 0.1
    assert focus.scores["accuracy"] > rand.scores["accuracy"]
