"""A few-step run of the two-stage recipe (the real recipe runs for about an hour)."""

import json

import pytest
import torch

from paretobench.models.loading import load_model
from paretobench.models.recipe import TrainConfig
from paretobench.models.train import patch_labels, train_embedded
from paretobench.data.tsv import read_tsv


def _cfg(synth_dir, out):
    return TrainConfig(data=str(synth_dir), out=str(out), seed=5, vision_steps=3, vision_batch=8, steps=4,
                       batch=4, warmup=2, val_every=2, val_size=16, grounding=1.0, grounding_layer=2)  # fmt: skip


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    return out, train_embedded(_cfg(synth_dir, out), log=lambda m: None)


def test_few_step_training_saves_a_loadable_model_and_record(trained, synth_dir):
    out, record = trained
    assert [h["step"] for h in record["history"]] == [2, 4]
    assert set(record["vision_patch_accuracy"]) == {"kind", "colour", "shape", "char", "value", "row", "col"}
    assert json.loads((out / "training.json").read_text())["config"]["steps"] == 4
    loaded = load_model(str(out))
    assert loaded.model.config.text_config.num_hidden_layers == 8
    assert record["train_rows"] + record["held_out_rows"] == len(read_tsv(synth_dir / "synth8_train.tsv"))


def test_training_is_deterministic_and_stage_two_leaves_the_tower_alone(trained, synth_dir, tmp_path):
    out, _ = trained
    cfg = _cfg(synth_dir, tmp_path)
    cfg.steps = 0  # stage 1 only: the tower must then equal the full run's tower
    cfg.val_every = 1
    train_embedded(cfg, log=lambda m: None)
    full, tower_only = load_model(str(out)).model, load_model(str(tmp_path)).model
    a, b = full.state_dict(), tower_only.state_dict()
    tower = [k for k in a if "vision_tower" in k]
    assert tower and all(torch.equal(a[k], b[k]) for k in tower)
    assert not all(torch.equal(a[k], b[k]) for k in a if "language_model" in k)


def test_patch_labels_follow_the_scene(synth_dir):
    rows = read_tsv(synth_dir / "synth8_chart.tsv")
    labels = patch_labels(rows)
    scene = json.loads(rows[0].extra["scene"])
    for p, owner in enumerate(scene["patches"]):
        if owner >= 0:
            assert labels["kind"][0, p] == 2  # bars
            assert labels["value"][0, p] == scene["items"][owner]["value"]
        else:
            assert labels["kind"][0, p] == 0
    assert labels["row"][0, 13] == 1 and labels["col"][0, 13] == 1


def test_vision_from_reuses_the_tower_and_records_the_chain(trained, synth_dir, tmp_path):
    source, _ = trained
    cfg = _cfg(synth_dir, tmp_path)
    cfg.vision_from, cfg.steps = str(source), 2
    record = train_embedded(cfg, log=lambda m: None)
    a, b = load_model(str(source)).model.state_dict(), load_model(str(tmp_path)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "vision_tower" in k)
    assert record["continued_from"]["config"]["steps"] == 4
    assert record["vision_patch_accuracy"] == record["continued_from"]["vision_patch_accuracy"]


def test_attention_hint_equals_the_attention_the_layer_computes(synth_dir, tiny_model_dir):
    """The hint's scores are recomputed from q/k + RoPE; they must equal the eager attention's
    weights, restricted to the image tokens and renormalised."""
    from paretobench.models.train import collate, focus_attention_loss, tokenize, normalise, pixels

    loaded = load_model(str(tiny_model_dir))
    model, processor = loaded.model, loaded.processor
    model.set_attn_implementation("eager")
    samples = read_tsv(synth_dir / "synth8_colour.tsv")[:3]
    ids, starts = tokenize(processor, samples)
    input_ids, mask, _ = collate(ids, starts, [0, 1, 2], processor.tokenizer.pad_token_id)
    layer = 1
    attn = model.model.language_model.layers[layer].self_attn
    seen = {}
    hook = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=mask, pixel_values=normalise(pixels(samples)),
                    output_attentions=True)  # fmt: skip
    hook.remove()
    image = input_ids == model.config.image_token_id
    focus = patch_labels(samples)["focus"].bool()
    query = torch.as_tensor([s - 1 for s in starts])
    got = focus_attention_loss(attn, seen["hidden_states"], seen["position_embeddings"], query, image, focus)

    weights = out.attentions[layer]  # (batch, heads, query, key)
    masses = []
    for b in range(3):
        w = weights[b, :, query[b]][:, image[b]]
        w = w / w.sum(-1, keepdim=True)
        masses.append(w[:, focus[b]].sum(-1).mean())
    want = -torch.log(torch.stack(masses)).mean()
    assert focus.any(1).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
