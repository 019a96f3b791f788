"""The pruned-inference engine against the model's own computations."""

import pytest
import torch

from engine_checks import (
    TEST_DEVICE,
    assert_live_counts_follow_schedules,
    assert_batch_equals_alone,
    assert_greedy_matches_generate,
    assert_keep_all_matches_model,
    eager_attention,
    score_spy,
)
from paretobench.adapters import UnsupportedModel, adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.engine import Engine
from paretobench.flops import DecoderShape, counting_mode, lm_head_flops, prefill_flops
from paretobench.models.loading import load_model
from paretobench.registry import PRUNERS, build_pruner
from paretobench.schedule import PruningSchedule
from pruners.fastv import FastV
from pruners.fitprune import FitPrune
from pruners.pyramiddrop import PyramidDrop
from pruners.sparsevlm import density_peak_centres
from pruners.vitcop import ViTCoP, _quota


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device=TEST_DEVICE)
    return loaded.model, loaded.processor


@pytest.fixture(scope="module")
def tiny_deep():
    """A random tiny-llava with four decoder layers: room for steps before layer 0, 1 and later."""
    from paretobench.models.tiny_llava import build_model, build_processor

    processor = build_processor()
    return build_model(processor, seed=3, text_layers=4, text_hidden=32, vision_layers=1).eval(), processor


@pytest.fixture(scope="module")
def samples(synth_dir):
    # different prompt lengths, so a batch is left-padded
    return read_tsv(synth_dir / "synth8_colour.tsv")[:2] + read_tsv(synth_dir / "synth8_relation.tsv")[:2]


def _state(model, processor, samples, keys=None):
    a = adapter_for(model, processor)
    encoded = a.encode(samples, vision_extras=True)
    return a, encoded.inputs, a.prepare(encoded, keys=keys)


def test_keep_all_equals_the_models_own_forward(tiny, samples):
    model, processor = tiny
    a, inputs, state = _state(model, processor, samples)
    assert not bool(state.valid.all())  # the batch is padded
    assert_keep_all_matches_model(model, a, inputs, state)


@pytest.mark.parametrize("pruner", [build_pruner(n) for n in PRUNERS.names()],
                         ids=lambda p: p.name)  # fmt: skip
@pytest.mark.parametrize("schedule", ["1,0.5", "0.5,0.25"])
def test_a_padded_batch_equals_each_sample_alone(tiny, samples, pruner, schedule):
    model, processor = tiny
    schedule = PruningSchedule.parse(schedule, 2)
    a, _, state = _state(model, processor, samples)
    alone = [_state(model, processor, [s], keys=[i])[2] for i, s in enumerate(samples)]
    assert_batch_equals_alone(a, state, alone, schedule, pruner)


def test_live_visual_tokens_follow_the_schedule(tiny, samples):
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    schedules = [PruningSchedule.parse(t, 2) for t in ("0.5,0.5", "1,0.25", "0.3,0", "1,1")]
    assert_live_counts_follow_schedules(a, state, schedules)


def test_keep_all_greedy_generation_equals_generate(tiny, samples):
    model, processor = tiny
    a, inputs, state = _state(model, processor, samples)
    assert_greedy_matches_generate(model, a, inputs, state, processor.tokenizer.pad_token_id, steps=5)


@pytest.mark.parametrize("pruner_cls, layer", [(FastV, 0), (PyramidDrop, 1)], ids=["fastv", "pyramiddrop"])
def test_attention_scores_are_the_eager_attention_maps_last_row(tiny, samples, pruner_cls, layer):
    """Score rows recomputed from q/k with SDPA on = the eager attention map's head-mean last
    row, captured by a hook: at the layer before the step (FastV, from the q/k that layer
    computed) or at the step's layer (PyramidDrop, from that layer's projections)."""
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    seen = {}
    spy = score_spy(pruner_cls, seen)
    Engine(a).prefill(state, PruningSchedule.parse("1,0.5", 2), spy)
    seen["eager"] = eager_attention(model, a, state, layer)
    want = seen["eager"].mean(1)[:, -1]  # (B, n): head-mean attention of the last position
    visual = state.visual
    torch.testing.assert_close(seen["scores"][visual], want[visual].float(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("pruner", [FastV(), PyramidDrop()], ids=lambda p: p.name)
def test_counted_flops_are_what_torch_counts_on_the_pruned_forward(tiny, samples, pruner):
    model, processor = tiny
    shape = DecoderShape.from_config(model.config.text_config)
    a, _, state = _state(model, processor, samples[:1])
    for text in ("1,1", "1,0.5", "0.5,0.5", "0.2,0", "1,0"):
        schedule = PruningSchedule.parse(text, 2)
        with counting_mode() as counter:
            result = Engine(a).prefill(state, schedule, pruner)
        analytic = prefill_flops(shape, [t[0] for t in result.tokens]) + result.score_flops[0] + lm_head_flops(shape)
        assert counter.get_total_flops() == analytic, text


@pytest.mark.parametrize("pruner", [build_pruner(n) for n in PRUNERS.names()], ids=lambda p: p.name)
def test_the_analytic_cost_of_a_schedule_is_what_the_engine_counts(tiny_deep, samples, pruner):
    """What searchers and ``--budget`` cost a schedule at (``schedule_flops`` with the pruner's
    ``score_cost``, recycled tokens included) equals the prefill the engine runs and counts, score
    rows included, for every pruner; SparseVLM's analytic cost charges every text token as a rater
    (its raters are chosen from the image), so it is an upper bound there, exact on the layers."""
    from paretobench.schedule import live_counts, schedule_flops

    model, processor = tiny_deep
    shape = DecoderShape.from_config(model.config.text_config)
    a, _, state = _state(model, processor, samples[:1])
    n_visual = state.n_visual[0]
    n_text = int(state.valid[0].sum()) - n_visual
    for text in ("1,1,1,1", "1,0.5,0.5,0.2", "0.5,0.5,0.25,0.25", "1,0.6,0.3,0", "0.4,0.2,0.1,0.05"):
        schedule = PruningSchedule.parse(text, 4)
        result = Engine(a).prefill(state, schedule, pruner)
        assert [c[0] for c in result.live_visual] == [c for c, _ in live_counts(schedule, n_visual, pruner.score_cost())]
        counted = prefill_flops(shape, [t[0] for t in result.tokens]) + result.score_flops[0]
        analytic = schedule_flops(shape, schedule, n_text, n_visual, pruner.score_cost())
        if pruner.score_rows == "text":
            assert counted <= analytic, text
        else:
            assert counted == analytic, (text, counted, analytic)


def test_a_schedule_that_drops_tokens_needs_a_pruner(tiny, samples):
    model, processor = tiny
    a, _, state = _state(model, processor, samples[:1])
    with pytest.raises(ValueError, match="pruner"):
        Engine(a).prefill(state, PruningSchedule.parse("1,0.5", 2))


def test_unsupported_architecture_is_named(tiny):
    model, processor = tiny

    class Fake:
        config = type("C", (), {"model_type": "blip-2", "text_config": None})()

    with pytest.raises(UnsupportedModel, match="blip-2"):
        adapter_for(Fake(), processor)


def test_density_peak_centres_find_separated_clusters():
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(10, 3, generator=g) * 0.1 + c for c in (0.0, 5.0, -5.0)])
    centres, assign = density_peak_centres(blobs, 3)
    assert sorted(assign.bincount().tolist()) == [10, 10, 10]
    assert len({int(c) // 10 for c in centres}) == 3


def test_fitprune_scores_are_cross_times_self_attention_received(tiny, samples):
    """Max over heads first, then the mean over the text rows after the image (cross) and over the
    visual rows (self)."""
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    seen = {}
    spy = score_spy(FitPrune, seen)
    Engine(a).prefill(state, PruningSchedule.parse("1,0.5", 2), spy)
    seen["eager"] = eager_attention(model, a, state, 0)
    for b in range(len(samples)):
        top = seen["eager"][b].float().amax(0)  # (n, n)
        visual = state.visual[b]
        first = int(visual.nonzero().min())
        text = state.valid[b] & ~visual
        text[: first + 1] = False
        want = top[text].mean(0) * top[visual].mean(0)
        torch.testing.assert_close(seen["scores"][b, visual], want[visual], rtol=1e-4, atol=1e-6)


def test_fitprune_recipe_meets_the_budget(tiny, samples):
    from paretobench.schedule import flops_fraction

    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    shape = DecoderShape.from_config(model.config.text_config)
    n_text = int(state.valid[0].sum()) - 144
    pruner = FitPrune()
    schedule = pruner.fit(Engine(a), [state], 0.75, n_text, 144)
    assert schedule.keep[0] == 1.0 and schedule.keep[1] < 1.0
    assert 0.73 <= flops_fraction(shape, schedule, n_text, 144, "total", pruner.score_cost()) <= 0.75


def test_vitcop_vision_stage_keeps_what_the_cls_token_attends_to(tiny, samples):
    model, processor = tiny
    a, inputs, state = _state(model, processor, samples)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model.model.vision_tower(inputs["pixel_values"], output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    cls = out.attentions[-1].mean(1)[:, 0, 1:]  # head mean, CLS row, patches (feature layer -1)
    torch.testing.assert_close(state.by_slot["vision_cls_attention"], cls.float(), rtol=0, atol=1e-6)
    result = Engine(a).prefill(state, PruningSchedule.parse("0.5,0.5", 2), ViTCoP())
    kept = result.state.slot[result.state.visual].view(len(samples), -1)
    for b in range(len(samples)):
        want = torch.sort(cls[b], descending=True, stable=True).indices[:72].sort().values
        assert torch.equal(kept[b].sort().values, want)


def test_vitcop_shallow_step_keeps_the_smallest_key_norms_of_every_cluster_and_merges_the_rest(tiny, samples):
    """Without a vision stage the clusters are formed on every token's vision keys; then each
    cluster keeps its smallest key norms and one more token, at the median position of its
    other members, holding that token's state plus their mean."""
    model, processor = tiny
    a, _, state = _state(model, processor, samples[:1])
    seen = {}

    class Spy(ViTCoP):
        def select(self, ctx, k):
            sel = super().select(ctx, k)
            slot = ctx.state.slot[0]
            seen["norm"], seen["h"] = ctx.keys.float().mean(1).norm(dim=-1)[0], ctx.state.h[0]
            seen["cluster"] = sel.by_slot["vitcop_cluster"][0, slot]
            seen["is_merged"] = sel.by_slot["vitcop_merged"][0, slot]
            seen["alive"], seen["keep"], seen["states"] = ctx.visual_positions(0), sel.keep[0], sel.hidden[0]
            return sel

    Engine(a).prefill(state, PruningSchedule.parse("1,0.25", 2), Spy())
    alive, keep, cluster, norm, h = seen["alive"], seen["keep"], seen["cluster"], seen["norm"], seen["h"]
    assert len(keep) == 36 and len(cluster[alive].unique()) == int(0.18 * 144)  # fewer clusters than tokens kept
    state_of = dict(zip(keep.tolist(), seen["states"]))
    for c in cluster[alive].unique():
        members = alive[cluster[alive] == c].tolist()
        kept = [p for p in keep.tolist() if p in members]
        merged = [p for p in kept if seen["is_merged"][p]]
        alone = [p for p in kept if p not in merged]
        rest = [p for p in members if p not in alone]
        assert len(merged) == 1 and merged[0] == rest[len(rest) // 2]
        assert not alone or max(norm[alone]) <= min(norm[rest])
        torch.testing.assert_close(state_of[merged[0]], h[merged[0]] + h[rest].mean(0))
        for p in alone:
            assert torch.equal(state_of[p], h[p])


def test_quota_shares_tokens_over_clusters():
    """Beyond one token per cluster, ``k - K`` tokens in proportion to each cluster's size - 1,
    at most size - 1 each; the rounding's excess goes to the clusters of the smallest key-norm sums."""
    for sizes, sums, k in (([10, 5, 1], [3.0, 2.0, 1.0], 8), ([3, 3, 3], [1.0, 2.0, 3.0], 5),
                           ([50, 2, 2, 1], [9.0, 1.0, 2.0, 3.0], 40), ([4, 4], [1.0, 2.0], 7)):  # fmt: skip
        q = _quota(sizes, sums, k)
        free, spare = k - len(sizes), sum(sizes) - len(sizes)
        assert sum(q) == free and all(0 <= a <= s - 1 for a, s in zip(q, sizes))
        assert all(abs(a - (s - 1) * free / spare) <= 1 for a, s in zip(q, sizes))
    assert _quota([3, 3, 3], [1.0, 2.0, 3.0], 5) == [1, 1, 0]  # 2/3 each rounds to 1: the largest sum gives one back
    assert _quota([3, 3, 3], [2.0, 1.0, 3.0], 4) == [0, 1, 0]  # 1/3 each rounds to 0: the smallest sum gets one


def test_a_pruner_that_keeps_the_wrong_tokens_is_stopped(tiny, samples):
    """The engine checks every choice against the schedule: too few tokens, a text token, or a
    mask of the wrong kind is an error naming the pruner, never a silently different run."""
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    schedule = PruningSchedule.parse("1,0.5", 2)

    class Picky(FastV):
        name = "picky"

        def __init__(self, how):
            self.how = how

        def select(self, ctx, k):
            keep = super().select(ctx, k)
            if self.how == "one short":
                first = keep.float().argmax(1)
                keep = keep.clone()
                keep[torch.arange(len(k)), first] = False
            elif self.how == "a text token":
                keep = keep.clone()
                keep[:, -1] = True  # the last position is text (the prompt's end)
            elif self.how == "float mask":
                keep = keep.float()
            return keep

    wrong = {"one short": "picky chose 71 visual positions for row 0", "a text token": "1 not live visual",
             "float mask": "expected a bool mask"}  # fmt: skip
    for how, message in wrong.items():
        with pytest.raises((RuntimeError, TypeError), match=message):
            Engine(a).prefill(state, schedule, Picky(how))
    assert Engine(a).prefill(state, schedule, Picky("none")).live_visual[1] == [72] * len(samples)
