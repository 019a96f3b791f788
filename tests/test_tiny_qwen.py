"""tiny-qwen2.5-vl as built from scratch: native resolution (the image's size sets its visual
token count), saved and reloaded offline without torchvision, and exact under the engine."""

import json

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


def test_few_step_training_on_native_resolution_data(tmp_path):
    from paretobench.data import synth
    from paretobench.training import TrainingConfig
    from paretobench.training.train import train_embedded

    data = tmp_path / "native"
    synth.synth(data, seed=1, n=1, n_train=3, native=True)
    cfg = TrainingConfig(data=str(data), out=str(tmp_path / "stage1"), arch="qwen2.5-vl", seed=2, vision_steps=2,
                      vision_batch=4, steps=0, batch=4, warmup=1, val_size=8, introduce=0, patch_labels=1.0,
                      roles=1.0, roles_layer=2)  # fmt: skip
    record = train_embedded(cfg, log=lambda m: None)
    assert set(record["vision_patch_accuracy"]) >= {"kind", "colour", "row", "col"}
    stage1 = load_model(cfg.out).model
    cfg.out, cfg.steps, cfg.val_every = str(tmp_path / "stage2"), 2, 1
    record = train_embedded(cfg, log=lambda m: None)  # the same stage 1 (same seed), then stage 2
    assert [h["step"] for h in record["history"]] == [1, 2]
    stage2 = load_model(cfg.out).model
    a, b = stage1.state_dict(), stage2.state_dict()
    frozen = [k for k in a if k.startswith(("model.visual.blocks", "model.visual.patch_embed"))]
    merger = [k for k in a if k.startswith("model.visual.merger")]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)  # stage 2 leaves the ViT alone
    assert merger and not all(torch.equal(a[k], b[k]) for k in merger)  # and trains the merger

    from paretobench.training.card import write_card

    probes = write_card(cfg.out, n=2)  # the card's probes run on synth8-native at this model's resolution
    assert probes["full"]["n"] == 16 and 16 <= probes["full"]["visual_tokens"] <= 256
    assert probes["random_25"]["kept_visual_tokens"] < probes["full"]["visual_tokens"]
    assert probes["mean_token"]["kept_visual_tokens"] == 1
    assert set(probes["patch_readability"]) == {"merger"}
    card = (tmp_path / "stage2" / "README.md").read_text()
    assert "Qwen2_5_VLForConditionalGeneration" in card and "synth8-native test split" in card


def test_training_refuses_fixed_resolution_data_for_qwen(tmp_path, synth_dir):
    from paretobench.training import TrainingConfig
    from paretobench.training.train import train_embedded

    cfg = TrainingConfig(data=str(synth_dir), out=str(tmp_path / "x"), arch="qwen2.5-vl", vision_steps=1, steps=0,
                      val_size=4)  # fmt: skip
    with pytest.raises(ValueError, match="use synth8-native data"):
        train_embedded(cfg, log=lambda m: None)
    assert not (tmp_path / "x").exists()


def test_search_space_token_counts_are_the_mean_over_image_sizes(saved, samples):
    """At native resolution the visual-token count varies per image: the search space takes the
    mean (16, 48 and 256 tokens -> 107), not the first image's."""
    from paretobench.adapters import text_token_counts

    model, out = saved
    rows, _ = samples
    adapter = adapter_for(model, load_model(str(out)).processor)
    adapter._batch_images = lambda images: [im.resize(size) for im, size in zip(images, SIZES)]
    n_text, n_visual = text_token_counts(adapter, rows)
    assert n_visual == round((16 + 48 + 256) / 3) == 107
    prompts = adapter._processor_inputs(rows)
    assert n_text == pytest.approx(float(prompts["attention_mask"].sum()) / 3 - n_visual, abs=0.5)


def test_stage_one_can_start_on_scenes_redrawn_at_one_size(tmp_path):
    """``vision_fixed_steps``: stage 1's first steps see every scene redrawn at one size, with the
    labels of the redrawn tokens; unset, the stored images and labels come back."""
    from paretobench.data import synth
    from paretobench.training import TrainingConfig
    from paretobench.training.inputs import QwenImages
    from paretobench.training.train import train_embedded

    data_dir = tmp_path / "native"
    synth.synth(data_dir, seed=4, n=1, n_train=2, families=("char", "count"), native=True)
    samples = read_tsv(data_dir / "synth8_train.tsv")
    data = QwenImages(samples, tiny_qwen.build_processor())
    rows = [0, 1, 2]
    stored = data.targets(rows)["kind"]
    assert len(stored) == sum(data.n_tokens(r) for r in rows)
    data.redraw_size = 96
    inputs, redrawn = data.vision_inputs(rows), data.targets(rows)
    assert inputs["image_grid_thw"].tolist() == [[1, 12, 12]] * 3  # 8-pixel patches of 96x96 images
    assert len(redrawn["kind"]) == 3 * 36 and redrawn["row"].max() == 5  # one label per 16x16 pixels
    scene = json.loads(samples[1].extra["scene"])
    _, owners = synth.redraw(scene, (96, 96))
    assert redrawn["kind"][36:72].gt(0).tolist() == (owners.reshape(-1) >= 0).tolist()
    data.redraw_size = None
    assert torch.equal(data.targets(rows)["kind"], stored)  # the redrawn batch does not linger
    for bad in (100, 48, 512):  # not a multiple of 16; under the processor's minimum; over the largest grid
        with pytest.raises(ValueError, match="cannot redraw the scenes"):
            data.check_redraw(bad)

    cfg = TrainingConfig(data=str(data_dir), out=str(tmp_path / "out"), arch="qwen2.5-vl", seed=2, vision_steps=2,
                      vision_batch=2, vision_fixed_steps=1, steps=0, val_size=2)  # fmt: skip
    record = train_embedded(cfg, log=lambda m: None)
    assert record["config"]["vision_fixed_steps"] == 1 and record["vision_label_accuracy"]
    from paretobench.training.card import _training_section

    assert "the first 1 steps on every scene redrawn at 96x96 pixels" in "\n".join(_training_section(record, []))


def test_redrawing_is_refused_where_it_means_nothing(tmp_path, synth_dir):
    from paretobench.training import TrainingConfig
    from paretobench.training.train import train_embedded

    llava = TrainingConfig(data=str(synth_dir), out=str(tmp_path / "a"), vision_steps=1, steps=0, val_size=4,
                        vision_fixed_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="one size already"):
        train_embedded(llava, log=lambda m: None)
    skipped = TrainingConfig(data=str(synth_dir), out=str(tmp_path / "b"), vision_steps=1, steps=0, val_size=4,
                          vision_fixed_steps=1, vision_from="tiny-llava")  # fmt: skip
    with pytest.raises(ValueError, match="which init_from and vision_from skip"):
        train_embedded(skipped, log=lambda m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
