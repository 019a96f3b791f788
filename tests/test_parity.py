"""Each pruner against a reference written from its official repository's logic
(``tests/reference``): a LLaVA run layer by layer at batch 1 with eager attention, as the
official code runs it. Our engine runs SDPA and recomputes the score rows from q/k; the kept
tokens must be the same at every layer, in the same order, and the hidden states and logits
equal within 1e-5."""

import pytest
import torch
from engine_checks import save_peaked_tiny_llava
from reference.fastv import fastv
from reference.llava_loop import LlavaLoop
from reference.pyramiddrop import pyramiddrop
from reference.sparsevlm import cluster_and_merge, sparsevlm

from paretobench.adapters import adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.engine import Engine
from paretobench.models.loading import load_model
from paretobench.schedule import PruningSchedule
from pruners.fastv import FastV
from pruners.pyramiddrop import PyramidDrop
from pruners.sparsevlm import SparseVLM, density_peak_centres

LAYERS = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Six decoder layers (several steps fit), peaked attention (``save_peaked_tiny_llava``)."""
    return save_peaked_tiny_llava(tmp_path_factory.mktemp("parity"), seed=4, layers=LAYERS)


@pytest.fixture(scope="module")
def samples(synth_dir):
    return read_tsv(synth_dir / "synth8_relation.tsv")[:2] + read_tsv(synth_dir / "synth8_count.tsv")[:1]


def _ours(model_dir, sample, schedule, pruner):
    loaded = load_model(str(model_dir))
    a = adapter_for(loaded.model, loaded.processor)
    state = a.prepare(a.encode([sample]))
    return Engine(a).prefill(state, schedule, pruner, trace=True), a.encode([sample]).inputs


def _reference_loop(model_dir, inputs):
    return LlavaLoop(load_model(str(model_dir)).model, inputs)


def _assert_same(result, kept, states, logits):
    for i, (st, want, h) in enumerate(zip(result.trace, kept, states)):
        slot = st.slot[0][st.valid[0]]
        assert slot[slot >= 0].tolist() == want.tolist(), f"layer {i}"
        torch.testing.assert_close(st.h[0][st.valid[0]], h[0], rtol=0, atol=1e-5, msg=f"layer {i}")
    torch.testing.assert_close(result.logits, logits, rtol=0, atol=1e-5)


def _counts(schedule, n_visual=144):
    return {i: c for i, c in enumerate(schedule.counts(n_visual)) if c < (schedule.counts(n_visual)[i - 1] if i else n_visual)}


@pytest.mark.parametrize("schedule", ["2:0.5", "1:0.5,3:0.25,5:0.1"])
def test_fastv_equals_the_official_algorithm(model_dir, samples, schedule):
    schedule = PruningSchedule.parse(schedule, LAYERS)
    for sample in samples:
        result, inputs = _ours(model_dir, sample, schedule, FastV())
        _assert_same(result, *fastv(_reference_loop(model_dir, inputs), _counts(schedule)))


@pytest.mark.parametrize("schedule", ["preset", "1:0.5,2:0.2,4:0.05"])
def test_pyramiddrop_equals_the_official_algorithm(model_dir, samples, schedule):
    pruner = PyramidDrop()
    schedule = pruner.preset(LAYERS) if schedule == "preset" else PruningSchedule.parse(schedule, LAYERS)
    for sample in samples:
        result, inputs = _ours(model_dir, sample, schedule, pruner)
        _assert_same(result, *pyramiddrop(_reference_loop(model_dir, inputs), _counts(schedule)))
    # and the positions really were renumbered (the official code's choice, ours by default)
    last = result.trace[-1]
    assert last.pos[0][last.valid[0]].tolist() == list(range(int(last.valid[0].sum())))


@pytest.mark.parametrize("recycle", [0.3, 0.0])
@pytest.mark.parametrize("schedule", ["preset", "1:0.6,2:0.3,4:0.1"])
def test_sparsevlm_equals_the_official_algorithm(model_dir, samples, schedule, recycle):
    pruner = SparseVLM(recycle=recycle)
    schedule = pruner.preset(LAYERS) if schedule == "preset" else PruningSchedule.parse(schedule, LAYERS)
    # the official code names the layer whose output it prunes: one before our step's layer
    steps = {i - 1: c for i, c in _counts(schedule).items()}
    for sample in samples:
        result, inputs = _ours(model_dir, sample, schedule, pruner)
        _assert_same(result, *sparsevlm(_reference_loop(model_dir, inputs), steps, recycle=bool(recycle)))
    if recycle:  # the recycled tokens come on top of the ranked ones (official: 300 + 9 of 576 after layer 2)
        assert [[len(k)] for k in sparsevlm(_reference_loop(model_dir, inputs), steps)[0]] == result.live_visual


def test_sparsevlm_preset_prunes_the_outputs_of_the_published_layers_scaled():
    # official: the outputs of layers 2, 6 and 15 of 32; the first reduced inputs are 3, 7 and 16
    assert SparseVLM().preset(32) == PruningSchedule.steps(32, {3: 300 / 576, 7: 200 / 576, 16: 110 / 576})
    assert SparseVLM().preset(8) == PruningSchedule.steps(8, {2: 300 / 576, 3: 200 / 576, 5: 110 / 576})


@pytest.mark.parametrize("dim", [1024, 4096])
def test_sparsevlm_clustering_finds_the_official_centres_at_hidden_state_scale(dim):
    """Real hidden states have thousands of dimensions of order 1: without SparseVLM's scaling
    by sqrt(C) every density underflows to 0 and the centres come out in sequence order."""
    g = torch.Generator().manual_seed(dim)
    centres = torch.randn(6, dim, generator=g) * 2
    x = centres[torch.randint(0, 6, (60,), generator=g)] + torch.randn(60, dim, generator=g)
    got, assign = density_peak_centres(x, 6)
    _, want = cluster_and_merge(x, 6)
    assert got.tolist() == want.tolist()
    assert sorted(got.tolist()) != list(range(6))
    # one centre per planted cluster, and every row with its planted cluster's other rows
    d = torch.cdist(x, centres)
    assert len(set(d[got].argmin(1).tolist())) == 6
    assert len({(int(a), int(p)) for a, p in zip(assign, d.argmin(1))}) == 6


def test_sparsevlm_rank_mode_keeps_the_first_releases_count(model_dir, samples):
    """count="rank": at a step, min(int(rank * scale + bias), live - 1) tokens stay, the rank
    being that of the raters' head-mean attention to the visual tokens (recycling as usual)."""
    from paretobench.schedule import ScoreCost

    pruner = SparseVLM(count="rank", scale=2.0, bias=3.0)
    schedule = pruner.preset(LAYERS)
    seen = []

    class Spy(SparseVLM):
        def select(self, ctx, k):
            probs, real = self.rater_attention(ctx)
            alive = ctx.visual_positions(0)
            seen.append((len(alive), int(torch.linalg.matrix_rank(probs[0][real[0]][:, alive].float()))))
            return super().select(ctx, k)

    result, _ = _ours(model_dir, samples[0], schedule, Spy(count="rank", scale=2.0, bias=3.0))
    live = [layer[0] for layer in result.live_visual]
    steps = [i for i in range(1, LAYERS) if schedule.keep[i] < schedule.keep[i - 1]]
    assert len(seen) == len(steps) >= 2
    for (alive, rank), i in zip(seen, steps):
        kept = alive if rank >= alive else min(2 * rank + 3, alive - 1)
        assert live[i] == kept + ScoreCost(recycle=0.3).added(alive, kept), (i, alive, rank)
    assert live[steps[0]] < 144  # it pruned
