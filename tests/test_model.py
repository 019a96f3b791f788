"""The embedded architecture: offline save/reload, the evaluator's forward against the model's own."""

import json

import pytest
import torch

from paretobench.data.datasets import load_dataset
from paretobench.evaluate import _select_rows, embed_batch, evaluate, greedy_decode, chat_prompts
from paretobench.flops import DecoderShape, prefill_flops
from paretobench.models.loading import ModelError, load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def samples(synth_dir):
    return load_dataset(str(synth_dir), limit=1).samples  # one per family, prompts of different lengths


def _inputs(processor, samples):
    processor.tokenizer.padding_side = "left"
    return processor(images=[s.image() for s in samples], text=chat_prompts(processor, samples),
                     return_tensors="pt", padding=True)  # fmt: skip


def test_offline_reload_gives_identical_logits(tiny, tmp_path, samples, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 20 * 2**20
    inputs = _inputs(tiny.processor, samples[:3])
    with torch.no_grad():
        a, b = tiny.model(**inputs).logits, again.model(**_inputs(again.processor, samples[:3])).logits
    assert torch.equal(a, b)


def test_visual_tokens_dominate_the_prompt(tiny, samples):
    inputs = _inputs(tiny.processor, samples)
    n_img = (inputs["input_ids"] == tiny.model.config.image_token_id).sum(1)
    n_text = inputs["attention_mask"].sum(1) - n_img
    assert (n_img == 144).all() and (n_text <= 45).all()


def test_keep_all_matches_the_models_own_forward(tiny, samples):
    model, processor = tiny.model, tiny.processor
    inputs, embeds, feats = embed_batch(model, processor, samples)
    e, m, p, kept = _select_rows(embeds, inputs, feats, samples, None, model.config.image_token_id)
    with torch.no_grad():
        ours = model.lm_head(model.model.language_model(inputs_embeds=e, attention_mask=m, position_ids=p)
                             .last_hidden_state[:, -1])  # fmt: skip
        for b, s in enumerate(samples):  # each sample alone, unpadded, through the model's forward
            ref = model(**_inputs(processor, [s])).logits[0, -1]
            assert torch.allclose(ours[b], ref, atol=1e-5), (b, (ours[b] - ref).abs().max())
    assert kept == [144] * len(samples)


def test_dropping_tokens_keeps_original_positions(tiny, samples):
    """Dropping visual tokens = the model's forward with those tokens masked out and positions kept."""
    model, processor = tiny.model, tiny.processor
    keep = torch.arange(0, 144, 3)

    def select(sample, feats):
        return feats[keep], keep

    inputs, embeds, feats = embed_batch(model, processor, samples[:2])
    e, m, p, kept = _select_rows(embeds, inputs, feats, samples[:2], select, model.config.image_token_id)
    assert kept == [48, 48]
    with torch.no_grad():
        ours = model.lm_head(model.model.language_model(inputs_embeds=e, attention_mask=m, position_ids=p)
                             .last_hidden_state[:, -1])  # fmt: skip
        for b, s in enumerate(samples[:2]):
            ref_in = _inputs(processor, [s])
            slots = torch.nonzero(ref_in["input_ids"][0] == model.config.image_token_id).squeeze(1)
            mask = ref_in["attention_mask"].clone()
            mask[0, slots] = 0
            mask[0, slots[keep]] = 1
            pos = torch.arange(mask.shape[1])[None]
            ref = model(**{**ref_in, "attention_mask": mask}, position_ids=pos).logits[0, -1]
            assert torch.allclose(ours[b], ref, atol=1e-5)


def test_greedy_decode_equals_generate(tiny, samples):
    model, processor = tiny.model, tiny.processor
    inputs, embeds, feats = embed_batch(model, processor, samples)
    e, m, p, _ = _select_rows(embeds, inputs, feats, samples, None, model.config.image_token_id)
    ours = greedy_decode(model, e, m, p, max_new_tokens=5, eos_id=-1, pad_id=0)
    with torch.no_grad():
        ref = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, eos_token_id=None)
    assert torch.equal(ours, ref[:, inputs["input_ids"].shape[1] :])


def test_evaluate_reports_scores_and_flops(tiny, samples):
    r = evaluate(tiny.model, tiny.processor, samples, batch_size=3)
    assert len(r.predictions) == len(samples) == r.scores["n"]
    assert set(r.scores["per_category"]) == {s.category for s in samples}
    shape = DecoderShape.from_config(tiny.model.config.text_config)
    # FLOPs are averaged per sample; prompt lengths differ by a few tokens, so the FLOPs of the
    # mean length are within 2%
    assert r.llm_prefill_flops == pytest.approx(prefill_flops(shape, [144 + r.text_tokens] * shape.layers), rel=0.02)


def test_wrong_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ModelError, match="holds no weights"):
        load_model(str(tmp_path / "noweights"))
