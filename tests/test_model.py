"""The embedded architecture: offline save/reload, the evaluator's forward against the model's own."""

import json

import pytest
import torch

from paretobench.data.datasets import load_dataset
from paretobench.adapters import adapter_for, chat_prompts
from paretobench.engine import Engine
from paretobench.measure import evaluate
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


def test_dropping_tokens_keeps_original_positions(tiny, samples):
    """Dropping visual tokens = the model's forward with those tokens masked out and positions kept."""
    model, processor = tiny.model, tiny.processor
    keep = torch.arange(0, 144, 3)

    def select(sample, feats):
        return feats[keep], keep

    adapter = adapter_for(model, processor)
    state = adapter.prepare(adapter.encode(samples[:2]), samples=samples[:2], select=select)
    assert state.visual_counts() == [48, 48] and state.n_visual == [144, 144]
    ours = Engine(adapter).prefill(state).logits
    with torch.no_grad():
        for b, s in enumerate(samples[:2]):
            ref_in = _inputs(processor, [s])
            slots = torch.nonzero(ref_in["input_ids"][0] == model.config.image_token_id).squeeze(1)
            mask = ref_in["attention_mask"].clone()
            mask[0, slots] = 0
            mask[0, slots[keep]] = 1
            pos = torch.arange(mask.shape[1])[None]
            ref = model(**{**ref_in, "attention_mask": mask}, position_ids=pos).logits[0, -1]
            torch.testing.assert_close(ours[b], ref, rtol=0, atol=1e-5)


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


def test_evaluate_many_equals_one_at_a_time(tiny, samples):
    from paretobench.measure import evaluate_many
    from paretobench.schedule import PruningSchedule
    from pruners.baselines import Random
    from pruners.fastv import FastV

    configs = [(None, None), (PruningSchedule.parse("1,0.25", 2), FastV()), (PruningSchedule.parse("0.5,0.5", 2), Random())]
    many = evaluate_many(tiny.model, tiny.processor, samples, configs, batch_size=3)
    for (schedule, pruner), got in zip(configs, many):
        one = evaluate(tiny.model, tiny.processor, samples, batch_size=3, schedule=schedule, pruner=pruner)
        assert got.predictions == one.predictions and got.llm_prefill_flops == one.llm_prefill_flops
    assert many[1].live_visual == [144, 36] and many[2].live_visual == [72, 72]
    assert many[1].llm_prefill_flops < many[0].llm_prefill_flops


def test_the_fingerprint_covers_every_file_that_changes_inputs_or_outputs(tiny_model_dir, tmp_path):
    import shutil

    from paretobench.models.loading import model_fingerprint

    base = model_fingerprint(str(tiny_model_dir))
    changed = {}
    for name, edit in [("chat_template.jinja", lambda t: t.replace("USER", "User")),
                       ("tokenizer_config.json", lambda t: t.replace("}", ', "model_max_length": 77}', 1)),
                       ("generation_config.json", lambda t: t.replace("}", ', "max_new_tokens": 3}', 1)),
                       ("processor_config.json", lambda t: t.replace("}", ', "patch_size": 99}', 1)),
                       ("README.md", lambda t: t + "notes")]:  # fmt: skip
        copy = tmp_path / name
        shutil.copytree(tiny_model_dir, copy)
        f = copy / name
        f.write_text(edit(f.read_text() if f.exists() else ""))
        changed[name] = model_fingerprint(str(copy))
    assert all(changed[n] != base for n in changed if n != "README.md"), changed
    assert changed["README.md"] == base  # documentation changes nothing the model computes
