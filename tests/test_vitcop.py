"""ViTCoP against a reference written from its official code (``reference/vitcop.py``): the
clustering alone, the shallow step alone, and the whole pruned prefill layer by layer."""

import math

import pytest
import torch

from paretobench.adapters import adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.engine import Engine
from paretobench.flops import DecoderShape, counting_mode, lm_head_flops, prefill_flops
from paretobench.schedule import PruningSchedule, schedule_flops
from pruners.vitcop import SETTINGS, ViTCoP, _grid, shallow_step, vic
from reference import vitcop as official


@pytest.fixture(scope="module")
def tiny():
    """A random tiny LLaVA with 4 decoder layers (a vision stage, a shallow and a deep step fit)
    whose features come from the second-to-last of 2 vision layers, as LLaVA-1.5's do."""
    from paretobench.models.tiny_llava import build_model, build_processor

    processor = build_processor()
    model = build_model(processor, seed=1, text_layers=4, text_hidden=32, vision_layers=2)
    model.config.vision_feature_layer = -2
    return model.eval(), processor


@pytest.fixture(scope="module")
def sample(synth_dir):
    return read_tsv(synth_dir / "synth8_relation.tsv")[:1]


def _run(tiny, sample, schedule, pruner):
    """The engine's trace and the reference's layers for one sample."""
    model, processor = tiny
    a = adapter_for(model, processor)
    encoded = a.encode(sample, vision_extras=True)
    result = Engine(a).prefill(a.prepare(encoded), schedule, pruner, trace=True)
    counts = schedule.counts(result.state.n_visual[0])
    steps = {i: c for i, c in enumerate(counts) if c < (counts[i - 1] if i else result.state.n_visual[0])}
    positions = "official" if pruner.positions == "step" else "original"
    return result, official.vitcop(model, encoded.inputs, steps, SETTINGS[pruner.setting][3], positions)


SCHEDULES = {"preset": None, "few tokens": {0: 0.5, 1: 8 / 144, 3: 3 / 144}, "no vision stage": {2: 0.3, 3: 0.1}}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("kind", SCHEDULES)
def test_vitcop_keeps_and_merges_what_the_official_code_does_at_every_layer(tiny, sample, setting, kind):
    """Under its preset, with fewer tokens than clusters at the shallow step, and without a
    vision stage: the same visual tokens at every layer's input, the same hidden states there
    (merged ones included) and the same logits, 1e-5."""
    pruner = ViTCoP(setting=setting)
    schedule = pruner.preset(4) if SCHEDULES[kind] is None else PruningSchedule.steps(4, SCHEDULES[kind])
    result, (kept, states, logits, labels) = _run(tiny, sample, schedule, pruner)
    for i, (state, want) in enumerate(zip(result.trace, kept)):
        assert torch.equal(state.slot[0][state.visual[0]], want), f"layer {i}"
        torch.testing.assert_close(state.h, states[i], rtol=0, atol=1e-5)
    torch.testing.assert_close(result.logits, logits, rtol=0, atol=1e-5)
    shallow = next(i for i in range(1, 4) if schedule.keep[i] < schedule.keep[i - 1])
    merged = result.trace[shallow].by_slot["vitcop_merged"][0].bool()
    assert int(merged.sum()) == min(len(labels[kept[shallow - 1]].unique()), schedule.counts(144)[shallow])
    at = merged[result.trace[shallow].slot[0].clamp(min=0)] & result.trace[shallow].visual[0]
    assert int(at.sum()) == int(merged.sum())  # one token per merged group, all in the sequence
    model, processor = tiny
    a = adapter_for(model, processor)
    plain = Engine(a).prefill(a.prepare(a.encode(sample, vision_extras=True)), schedule, ViTCoP(setting, merge=False),
                              trace=True).trace[shallow].h[0]  # fmt: skip
    assert not torch.allclose(result.trace[shallow].h[0][at], plain[at], atol=1e-3)  # merging changed them
    torch.testing.assert_close(result.trace[shallow].h[0][~at], plain[~at], rtol=0, atol=0)


def test_vitcop_with_original_positions_keeps_the_same_tokens_and_matches_its_reference(tiny, sample):
    """``positions="keep"``: the original ids throughout; the same tokens as the official numbering
    and the reference run with original ids (logits 1e-5)."""
    pruner = ViTCoP(positions="keep")
    result, (kept, _, logits, _) = _run(tiny, sample, pruner.preset(4), pruner)
    assert all(torch.equal(s.slot[0][s.visual[0]], k) for s, k in zip(result.trace, kept))
    torch.testing.assert_close(result.logits, logits, rtol=0, atol=1e-5)
    official, _ = _run(tiny, sample, ViTCoP().preset(4), ViTCoP())
    assert not torch.allclose(official.logits, result.logits, atol=1e-5)  # the numbering matters


def _planted(dim: int, n_keep: int = 96, seed: int = 0):
    """Tokens of a 12x12 patch grid split into six 4x6 blocks, each block's features one random
    centre plus 5% noise (entries of std 1, as hidden states); ``n_keep`` of them, in image order."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.arange(144) // 12, torch.arange(144) % 12
    block = (rows // 4) * 2 + cols // 6
    feats = torch.randn(6, dim, generator=g)[block] + 0.05 * torch.randn(144, dim, generator=g)
    keep = torch.randperm(144, generator=g)[:n_keep].sort().values
    return feats[keep], official.grid(144)[keep], block[keep]


@pytest.mark.parametrize("dim", [1024, 4096])
def test_vic_equals_the_official_clustering_at_hidden_state_scales(dim):
    """At 1024-d and 4096-d, where exp(-(d/8)^2) underflows to 0 between unrelated tokens: the
    same labels and centres as the official code; every cluster lies inside one planted block,
    the six strongest centres are the six blocks' heads, and the centres are not simply the
    first tokens."""
    x, pos, block = _planted(dim)
    labels, centres = vic(x, pos, 0.18)
    want_labels, want_centres = official.vic(x, pos, 0.18)
    assert torch.equal(labels, want_labels) and torch.equal(centres, want_centres)
    assert len(centres) == int(0.18 * 96) and not torch.equal(centres, torch.arange(len(centres)))
    assert bool((labels >= 0).all())
    for c in labels.unique():
        assert len(block[labels == c].unique()) == 1
    assert sorted(block[centres[:6]].tolist()) == list(range(6))


def test_vic_without_structure_takes_the_most_isolated_tokens_as_centres():
    """Unrelated 4096-d tokens: every density is exactly 1 (the token itself), so the centres
    are the tokens farthest from their nearest neighbour on the grid's reach, as officially."""
    g = torch.Generator().manual_seed(1)
    x, pos = torch.randn(64, 4096, generator=g), official.grid(64)
    labels, centres = vic(x, pos, 0.18)
    want_labels, want_centres = official.vic(x, pos, 0.18)
    assert torch.equal(labels, want_labels) and torch.equal(centres, want_centres)
    dist = official.pairwise(x).fill_diagonal_(float("inf"))
    dist[official.pairwise(pos) > 0.6] = float("inf")
    assert torch.equal(centres, torch.sort(dist.min(1).values, descending=True, stable=True).indices[:11])


def test_vic_leaves_tokens_no_centre_reaches_unlabelled():
    """Two identical tokens far from the rest point at each other (equal densities count as
    denser): unless one of them is a centre, both stay -1, as in the official code."""
    x = torch.cat([torch.zeros(8, 4), torch.full((2, 4), 100.0)]) + torch.arange(10.0)[:, None] * 1e-3
    x[9] = x[8]
    pos = torch.zeros(10, 2)
    labels, _ = vic(x, pos, 0.1)
    assert torch.equal(labels, official.vic(x, pos, 0.1)[0])
    assert labels[8:].tolist() == [-1, -1]


@pytest.mark.parametrize("seed", range(6))
def test_shallow_step_equals_the_official_selection(seed):
    """Random clusters (an unlabelled -1 group among them) and key norms, with more and with
    fewer tokens to keep than clusters: the same kept tokens and merged groups."""
    g = torch.Generator().manual_seed(seed)
    n = 60
    labels = torch.randint(-1, 9, (n,), generator=g)
    norm = torch.rand(n, generator=g) * 10
    for k in (5, 9, 10, 31, 59):
        kept, groups = shallow_step(labels, norm, k)
        want_kept, want_groups = official.shallow(labels, norm, k)
        assert kept.tolist() == sorted(want_kept)
        assert sorted(g.tolist() for g in groups) == sorted(g.tolist() for g in want_groups)
        assert len(kept) + len(groups) == k


def test_vitcop_preset_is_the_official_setting_scaled_to_the_depth():
    """32 layers: the official counts of 576 (vision stage, from layer 2, from layer 22), i.e.
    192/128/64 tokens on average; shallower decoders put the steps at 2/32 and 22/32 of their
    depth, rounded half up."""
    for setting, (vision, shallow, deep, _) in SETTINGS.items():
        counts = ViTCoP(setting=setting).preset(32).counts(576)
        assert counts == [vision] * 2 + [shallow] * 20 + [deep] * 10
        assert math.floor(sum(counts) / 32 + 0.5) == setting

    def steps(layers):
        keep = (1.0, *ViTCoP().preset(layers).keep)
        return [i for i in range(layers) if keep[i + 1] < keep[i]]

    assert {n: steps(n) for n in (2, 4, 8, 28, 36)} == {2: [0, 1], 4: [0, 1, 3], 8: [0, 1, 6], 28: [0, 2, 19],
                                                         36: [0, 2, 25]}  # fmt: skip


def test_vitcop_analytic_flops_equal_the_counted_flops(tiny, sample):
    """What a schedule is charged before it runs (``schedule_flops`` with ViTCoP's score cost) =
    what the pruned forward executes: the vision stage reads the vision tower, the LLM steps the
    keys of the layer before, so scoring costs the decoder nothing."""
    model, processor = tiny
    a = adapter_for(model, processor)
    state = a.prepare(a.encode(sample, vision_extras=True))
    shape = DecoderShape.from_config(model.config.text_config)
    pruner = ViTCoP()
    n_visual = state.n_visual[0]
    n_text = int(state.valid[0].sum()) - n_visual
    for schedule in (pruner.preset(4), PruningSchedule.steps(4, {0: 0.3}), PruningSchedule.steps(4, {1: 0.5, 2: 0.1})):
        with counting_mode() as counter:
            result = Engine(a).prefill(state, schedule, pruner)
        assert result.score_flops == [0]
        analytic = schedule_flops(shape, schedule, n_text, n_visual, pruner.score_cost())
        assert counter.get_total_flops() == analytic + lm_head_flops(shape), schedule
        assert analytic == prefill_flops(shape, [t[0] for t in result.tokens])


def test_vitcop_ablations_change_only_what_they_name(tiny, sample):
    """``merge=False``: the same tokens, the merged ones left as they were; ``deep_clusters``:
    the deep step shares out over the clusters and merges too. Both are in the config."""
    model, processor = tiny
    a = adapter_for(model, processor)
    state = a.prepare(a.encode(sample, vision_extras=True))
    schedule = ViTCoP().preset(4)
    base, plain, deep = (Engine(a).prefill(state, schedule, p, trace=True)
                         for p in (ViTCoP(), ViTCoP(merge=False), ViTCoP(deep_clusters=True)))  # fmt: skip
    for b, p in zip(base.trace, plain.trace):
        assert torch.equal(b.slot, p.slot)
    vision_only = Engine(a).prefill(state, PruningSchedule.steps(4, {0: 0.5}), ViTCoP(), trace=True).trace[1]
    kept = torch.isin(vision_only.slot[0], plain.trace[1].slot[0])
    torch.testing.assert_close(plain.trace[1].h[0], vision_only.h[0][kept], rtol=0, atol=0)
    assert int(deep.trace[3].by_slot["vitcop_merged"].sum()) > int(base.trace[3].by_slot["vitcop_merged"].sum())
    assert ViTCoP(setting=64, merge=False).config() == {"name": "vitcop", "version": 2, "setting": 64, "merge": False,
                                                        "deep_clusters": False, "positions": "step"}  # fmt: skip
    assert type(ViTCoP())(**ViTCoP(deep_clusters=True).params()).deep_clusters


def test_vitcop_grid_is_the_square_patch_grid_in_raster_order(tiny, sample):
    model, processor = tiny
    a = adapter_for(model, processor)
    state = a.prepare(a.encode(sample, vision_extras=True))

    class Ctx:
        initial = state

    torch.testing.assert_close(_grid(Ctx, 0), official.grid(144), rtol=0, atol=0)


def test_vitcop_grid_on_qwen_comes_from_the_m_rope_positions(synth_dir):
    """Qwen2.5-VL images of 4x3, 2x2 and 3x4 merged tokens (width x height): every token's (row / H,
    column / W) read off its (height, width) M-RoPE positions, in the decoder's raster order."""
    from test_qwen_adapter import IMAGE_SIZES, _image_fn, build_model, build_processor

    samples = read_tsv(synth_dir / "synth8_colour.tsv")[:2] + read_tsv(synth_dir / "synth8_relation.tsv")[:1]
    processor = build_processor("qwen2_5_vl")
    a = adapter_for(build_model("qwen2_5_vl", processor), processor)
    state = a.prepare(a.encode(samples, _image_fn(samples), vision_extras=True))

    class Ctx:
        initial = state

    for b, (width, height) in enumerate(IMAGE_SIZES):
        rows, cols = height // 16, width // 16
        s = torch.arange(rows * cols)
        want = torch.stack([s // cols / rows, s % cols / cols], 1)
        torch.testing.assert_close(_grid(Ctx, b), want, rtol=0, atol=1e-7)
