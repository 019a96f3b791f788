"""A few-step run of the two-stage recipe (the real recipe runs for about an hour)."""

import json

import numpy as np
import pytest
import torch

from paretobench.models.loading import load_model
from paretobench.training import TrainingConfig
from paretobench.training.config import native_bf16, uses_bf16
from paretobench.training.labels import label_accuracy, label_loss, patch_labels
from paretobench.training.stages import family_weights, parse_emphasis
from paretobench.training.train import train_embedded
from paretobench.training.weights import transplant_decoder
from paretobench.data.tsv import read_tsv


def _cfg(synth_dir, out):
    return TrainingConfig(data=str(synth_dir), out=str(out), seed=5, vision_steps=3, vision_batch=8, steps=4,
                       batch=4, warmup=2, val_every=2, val_size=16, grounding=1.0, grounding_layer=2,
                       patch_labels=1.0, pointing=1.0, pointing_layer=4, roles=1.0, roles_layer=3)  # fmt: skip


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    return out, train_embedded(_cfg(synth_dir, out), log=lambda m: None)


def test_few_step_training_saves_a_loadable_model_and_record(trained, synth_dir):
    out, record = trained
    assert [h["step"] for h in record["history"]] == [2, 4]
    assert set(record["vision_patch_accuracy"]) == {"kind", "colour", "shape", "char", "value", "row", "col"}
    assert set(record["vision_label_accuracy"]) == set(record["vision_patch_accuracy"])
    # stage 1 is validated every val_every (2) steps and at its end (3)
    assert [h["step"] for h in record["vision_history"]] == [2, 3]
    assert record["vision_history"][-1]["char"] == record["vision_label_accuracy"]["char"]
    assert json.loads((out / "training.json").read_text())["config"]["steps"] == 4
    loaded = load_model(str(out))
    assert loaded.model.config.text_config.num_hidden_layers == 8
    assert record["train_rows"] + record["held_out_rows"] == len(read_tsv(synth_dir / "synth8_train.tsv"))
    # bf16 left unset: autocast only where the CPU computes bf16 itself, and the record says which
    assert record["config"]["bf16"] is None and record["bf16"] == native_bf16(torch.device("cpu"))


def test_training_is_deterministic_and_stage_two_leaves_the_tower_alone(trained, synth_dir, tmp_path):
    out, _ = trained
    cfg = _cfg(synth_dir, tmp_path)
    cfg.steps = 0  # stage 1 only: the tower must then equal the full run's tower
    cfg.val_every = 1  # validated after every step: validation must not change what is trained
    train_embedded(cfg, log=lambda m: None)
    full, tower_only = load_model(str(out)).model, load_model(str(tmp_path)).model
    a, b = full.state_dict(), tower_only.state_dict()
    tower = [k for k in a if "vision_tower" in k]
    assert tower and all(torch.equal(a[k], b[k]) for k in tower)
    assert not all(torch.equal(a[k], b[k]) for k in a if "language_model" in k)


def test_patch_label_loss_trains_the_projector(trained, synth_dir, tmp_path):
    out, _ = trained
    models = {}
    for weight in (1.0, 0.0):  # the same tower, seed and batches; only the loss differs
        cfg = _cfg(synth_dir, tmp_path / str(weight))
        cfg.patch_labels, cfg.vision_from = weight, str(out)
        train_embedded(cfg, log=lambda m: None)
        models[weight] = load_model(cfg.out).model
    with_loss, without = models[1.0], models[0.0]
    a, b = with_loss.state_dict(), without.state_dict()
    projector = [k for k in a if "multi_modal_projector" in k]
    assert projector and not all(torch.equal(a[k], b[k]) for k in projector)


def test_label_loss_and_accuracy_on_the_tokens_that_show_each_label():
    """Three tokens: background, a red square, a character. Worked by hand: with ``shown_only`` the
    character head's loss is its cross-entropy on the one character token alone; accuracy counts
    only the tokens that show the label (object tokens for kind)."""
    torch.manual_seed(0)
    feats = torch.randn(3, 5)
    heads = torch.nn.ModuleDict({"kind": torch.nn.Linear(5, 4), "char": torch.nn.Linear(5, 6)})
    targets = {"kind": torch.tensor([0, 1, 3]), "char": torch.tensor([0, 0, 4])}
    kind = torch.nn.functional.cross_entropy(heads["kind"](feats), targets["kind"])
    char_all = torch.nn.functional.cross_entropy(heads["char"](feats), targets["char"])
    char_shown = torch.nn.functional.cross_entropy(heads["char"](feats[2:]), targets["char"][2:])
    assert torch.allclose(label_loss(heads, feats, targets, shown_only=False), kind + char_all)
    assert torch.allclose(label_loss(heads, feats, targets, shown_only=True), kind + char_shown)
    # no token shows the attribute: that head adds nothing (not a NaN from an empty mean)
    none = {"kind": targets["kind"], "char": torch.zeros(3, dtype=torch.long)}
    assert torch.allclose(label_loss(heads, feats, none, shown_only=True), kind)
    with torch.no_grad():
        heads["char"].weight.zero_()
        heads["char"].bias.copy_(torch.tensor([5.0, 0, 0, 0, 1, 0]))  # always says "no character"
    acc = label_accuracy(heads, feats, targets)
    assert acc["char"] == (0, 1)  # right on the two tokens without a character, which do not count
    assert acc["kind"][1] == 2


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
    assert record["vision_label_accuracy"] == record["continued_from"]["vision_label_accuracy"]



def test_a_transplanted_decoder_computes_the_same_function_on_text(trained):
    """tiny-qwen2.5-vl can start from tiny-llava's trained decoder: on text alone (where M-RoPE's
    three position streams coincide) the two decoders' logits agree, token for token."""
    from paretobench.models import tiny_qwen

    source, _ = trained
    llava = load_model(str(source))
    processor = tiny_qwen.build_processor()
    qwen = tiny_qwen.build_model(processor, seed=1)
    record = transplant_decoder(qwen, processor.tokenizer, source)
    words = "what colour is the square ? red green blue".split()
    theirs = torch.tensor([llava.processor.tokenizer.convert_tokens_to_ids(words)])
    ours = torch.tensor([processor.tokenizer.convert_tokens_to_ids(words)])
    assert record["tokens_shared"] > 100 and record["config"]["steps"] == 4
    with torch.no_grad():
        a = llava.model(input_ids=theirs).logits[0][:, theirs[0]]
        b = qwen(input_ids=ours).logits[0][:, ours[0]]
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    small = tiny_qwen.build_model(processor, seed=1, text_layers=2)
    with pytest.raises(ValueError, match="num_hidden_layers 8 vs 2"):
        transplant_decoder(small, processor.tokenizer, source)


def test_families_enter_one_at_a_time_then_share_equally():
    fam = np.array(["count", "colour", "word", "colour", "shape", "relation", "count", "colour"])
    share = lambda w, f: w[fam == f].sum() / w.sum()  # noqa: E731
    w, active = family_weights(fam, 0, 10)
    assert active == ["colour"] and share(w, "colour") == pytest.approx(1.0)
    w, active = family_weights(fam, 25, 10)  # third family ("word" follows colour, shape in ORDER)
    assert active == ["word", "colour", "shape"]
    assert share(w, "word") == pytest.approx(0.5) and share(w, "shape") == pytest.approx(0.25)
    assert share(w, "count") == 0
    # within a family every row is equally likely
    assert w[1] == w[3] == w[7]
    for step, introduce in ((50, 10), (0, 0)):
        w, active = family_weights(fam, step, introduce)
        assert sorted(active) == sorted(set(fam)) and all(share(w, f) == pytest.approx(0.2) for f in set(fam))
    # emphasis scales the shares once every family trains: relation x3 -> 3 / (4 + 3)
    w, _ = family_weights(fam, 0, 0, parse_emphasis("relation=3"))
    assert share(w, "relation") == pytest.approx(3 / 7) and share(w, "count") == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="not in the training data"):
        family_weights(fam, 0, 0, {"chart": 2.0})
    for bad in ("relation", "relation=x", "relation=0"):
        with pytest.raises(ValueError, match="FAMILY=WEIGHT"):
            parse_emphasis(bad)


def test_item_positions_point_at_the_questions_items(synth_dir):
    from paretobench.training.labels import item_positions

    relation = json.loads(read_tsv(synth_dir / "synth8_relation.tsv")[0].extra["scene"])
    pos = item_positions(relation)
    owners = np.array(relation["patches"]).reshape(12, 12)
    for k in (0, 1):
        r, c = pos[2 * k : 2 * k + 2]
        assert owners[r, c] == relation["focus"][k] or abs(r - np.nonzero(owners == k)[0].mean()) <= 0.5
    colour = json.loads(read_tsv(synth_dir / "synth8_colour.tsv")[0].extra["scene"])
    assert item_positions(colour)[2:] == [-100, -100] and min(item_positions(colour)[:2]) >= 0
    count = [json.loads(s.extra["scene"]) for s in read_tsv(synth_dir / "synth8_count.tsv")]
    assert all(item_positions(s) == [-100] * 4 for s in count if len(s["focus"]) > 2)


def test_role_labels_name_the_first_and_second_item_of_a_relation(synth_dir):
    from paretobench.training.labels import scene_labels

    relation = json.loads(read_tsv(synth_dir / "synth8_relation.tsv")[0].extra["scene"])
    role, owners = scene_labels(relation)["role"], np.array(relation["patches"])
    first, second = relation["focus"]
    assert (role[owners == first] == 1).all() and (role[owners == second] == 2).all()
    assert (role[(owners != first) & (owners != second)] == 0).all()  # other objects and background
    assert (role == 1).any() and (role == 2).any()
    colour = json.loads(read_tsv(synth_dir / "synth8_colour.tsv")[0].extra["scene"])
    assert (scene_labels(colour)["role"] == -100).all()  # one named item: nothing to tell apart


def test_a_run_resumed_from_any_checkpoint_ends_where_the_uninterrupted_run_ends(trained, synth_dir, tmp_path,
                                                                                 monkeypatch):  # fmt: skip
    from paretobench.training import train

    out, record = trained
    kept = []  # every checkpoint the run writes, in order (each overwrites the last one on disk)
    save = train.Checkpoint.save

    def keep_each(self, cfg, state):
        save(self, cfg, state)
        kept.append((state["stage"], state["step"], (self.folder / self.NAME).read_bytes()))

    monkeypatch.setattr(train.Checkpoint, "save", keep_each)
    cfg = _cfg(synth_dir, tmp_path / "run")
    cfg.checkpoint, cfg.checkpoint_every = str(tmp_path / "ckpt"), 1
    with pytest.raises(ValueError, match="holds no checkpoint"):
        train.train_embedded(cfg, log=lambda m: None, resume=True)
    train.train_embedded(cfg, log=lambda m: None)
    monkeypatch.setattr(train.Checkpoint, "save", save)
    assert [(s, k) for s, k, _ in kept] == [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2), (2, 3)]
    with pytest.raises(ValueError, match="--resume"):  # a new run never overwrites a checkpoint
        train.train_embedded(cfg, log=lambda m: None)
    want = load_model(str(out)).model.state_dict()
    for stage, step, blob in [kept[1], kept[2], kept[4]]:  # mid stage 1, between the stages, mid stage 2
        (tmp_path / "ckpt" / "state.pt").write_bytes(blob)
        if stage == 2:  # as if ten minutes of stage 2 had run before the checkpoint
            state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)
            state["language_seconds"] += 600
            torch.save(state, tmp_path / "ckpt" / "state.pt")
        cfg_out = tmp_path / f"resumed-{stage}-{step}"
        config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "out": str(cfg_out)}))
        got = train.resume(str(tmp_path / "ckpt"), log=lambda m: None)
        assert got["resumed"] and [h["step"] for h in got["history"]] == [2, 4]
        assert [h["mean"] for h in got["history"]] == [h["mean"] for h in record["history"]]
        assert got["vision_label_accuracy"] == record["vision_label_accuracy"]
        # the record's stage-2 time counts the time before the checkpoint, as its history does
        assert got["minutes"]["language"] >= got["history"][-1]["minutes"] >= (10 if stage == 2 else 0)
        sd = load_model(str(cfg_out)).model.state_dict()
        assert all(torch.equal(want[k], sd[k]) for k in want), (stage, step)


def test_resume_refuses_other_training_data(trained, synth_dir, tmp_path):
    from paretobench.training import train

    cfg = _cfg(synth_dir, tmp_path / "run")
    cfg.checkpoint, cfg.checkpoint_every, cfg.steps = str(tmp_path / "ckpt"), 2, 0
    train.train_embedded(cfg, log=lambda m: None)
    other = tmp_path / "other"
    other.mkdir()
    rows = (synth_dir / "synth8_train.tsv").read_text().splitlines(keepends=True)
    (other / "synth8_train.tsv").write_text("".join(rows[:-1]))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "data": str(other)}))
    with pytest.raises(ValueError, match="not the file the checkpoint"):
        train.resume(str(tmp_path / "ckpt"), log=lambda m: None)


def test_bf16_flag_forces_either_way_and_defaults_to_the_hardware():
    cpu = torch.device("cpu")
    for flag, want in ((True, True), (False, False), (None, native_bf16(cpu))):
        assert uses_bf16(TrainingConfig(data="d", out="o", bf16=flag), cpu) is want
    from paretobench.cli import build_parser

    parser = build_parser()
    for argv, want in (([], None), (["--bf16"], True), (["--no-bf16"], False)):
        assert parser.parse_args(["train-embedded", *argv]).bf16 is want
