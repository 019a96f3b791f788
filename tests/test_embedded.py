"""The shipped tiny-llava: loads offline, is small, and is accurate where the card says."""

import pytest

from paretobench.data.datasets import load_dataset
from paretobench.evaluate import evaluate
from paretobench.models.card import grey_image, select_focus, select_random
from paretobench.models.loading import load_model, resolve_model_dir


@pytest.fixture(scope="module")
def shipped():
    return load_model("tiny-llava")


@pytest.fixture(scope="module")
def subset():
    return load_dataset("synth8", limit=25).samples  # 25 per family


def test_shipped_files_are_small_and_complete():
    files = {p.name: p.stat().st_size for p in resolve_model_dir("tiny-llava")[1].iterdir()}
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
    # the model's targets (mean >= 85%, every family >= 65% on the full test split; it scores
    # 95.3%, its weakest family 82.4%; chance ~28%), with room for a 200-question subset
    full = evaluate(shipped.model, shipped.processor, subset)
    assert full.scores["accuracy"] >= 0.85
    assert min(full.scores["per_category"].values()) >= 0.6
    grey = evaluate(shipped.model, shipped.processor, subset, image_fn=grey_image)
    assert full.scores["accuracy"] - grey.scores["accuracy"] >= 0.4
    rand = evaluate(shipped.model, shipped.processor, subset, select=select_random(0.25))
    focus = evaluate(shipped.model, shipped.processor, subset, select=select_focus(0.25))
    assert rand.kept_visual_tokens == focus.kept_visual_tokens == 36
    assert full.scores["accuracy"] - rand.scores["accuracy"] >= 0.1
    # keeping the asked-about items beats a random keep (by 9.9 points on the full split; counting
    # loses when only the counted objects remain)
    assert focus.scores["accuracy"] - rand.scores["accuracy"] >= 0.03

def test_patch_readability_probe(shipped, subset):
    from paretobench.models.card import READABLE, patch_readability

    read = patch_readability(shipped.model, subset, steps=150)
    assert set(read) == {"tower", "projector"} and all(set(r) == set(READABLE) for r in read.values())
    # stage 1 supervised these labels on the tower's features, and stage 2's patch-label loss kept
    # them through the projector: a linear probe reads them back from both
    assert min(read["tower"].values()) >= 0.9 and min(read["projector"].values()) >= 0.9
    assert all(0 <= a <= 1 for r in read.values() for a in r.values())


def test_engine_is_exact_on_the_shipped_model(shipped, subset):
    """Keep-all = the model's own forward, and the analytic FLOPs of five pruned forwards = what
    FlopCounterMode counts on them."""
    import torch

    from paretobench.adapters import adapter_for
    from paretobench.engine import Engine
    from paretobench.flops import DecoderShape, counting_mode, lm_head_flops, prefill_flops
    from paretobench.schedule import PruningSchedule
    from pruners.fastv import FastV
    from pruners.pyramiddrop import PyramidDrop

    model = shipped.model
    adapter = adapter_for(model, shipped.processor)
    encoded = adapter.encode(subset[:3])
    state = adapter.prepare(encoded)
    with torch.no_grad():
        want = model(**encoded.inputs).logits[:, -1]
    torch.testing.assert_close(Engine(adapter).prefill(state).logits, want, rtol=0, atol=1e-5)
    shape = DecoderShape.from_config(model.config.text_config)
    one = adapter.prepare(adapter.encode(subset[:1]))
    for text, pruner in (("2:0.5", FastV()), ("0:0.5", FastV()), ("1:0.75,4:0.25", FastV()),
                         ("2:0.5,4:0.25,6:0.125", PyramidDrop()), ("1:0.3,5:0", FastV())):  # fmt: skip
        with counting_mode() as counter:
            result = Engine(adapter).prefill(one, PruningSchedule.parse(text, 8), pruner)
        analytic = prefill_flops(shape, [t[0] for t in result.tokens]) + result.score_flops[0] + lm_head_flops(shape)
        assert counter.get_total_flops() == analytic, text
