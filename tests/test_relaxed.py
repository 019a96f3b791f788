"""VisPCO's relaxed forward: its values are the engine's hard-drop forward, its gradients reach
the keep ratios."""

import pytest
import torch

from engine_checks import TEST_DEVICE
from paretobench.adapters import adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.engine import Engine
from searchers.vispco.relaxed import Relaxation, relaxed_prefill, soft_threshold
from paretobench.schedule import PruningSchedule
from pruners.base import Pruner
from pruners.fastv import FastV
from pruners.pyramiddrop import PyramidDrop
from pruners.sparsevlm import SparseVLM

KEEP = [1.0, 0.8, 0.55, 0.55, 0.3, 0.2]


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A random tiny-llava with a 6-layer decoder (room for a multi-step schedule)."""
    from paretobench.models.tiny_llava import build_model, build_processor

    processor = build_processor()
    model = build_model(processor, seed=2, text_layers=6, text_hidden=32, vision_layers=1).to(TEST_DEVICE).eval()
    return model, processor


@pytest.fixture(scope="module")
def samples(synth_dir):
    return read_tsv(synth_dir / "synth8_count.tsv")[:2] + read_tsv(synth_dir / "synth8_word.tsv")[:1]


class Fixed(Pruner):
    """Keeps exactly the visual tokens (by slot) that given per-layer masks keep."""

    name = "fixed"
    score_rows = "none"

    def __init__(self, masks, positions="keep"):
        self.masks = masks  # per layer, (Nv,) bool
        self.positions = positions  # as the relaxed pruner numbers them

    def select(self, ctx, k):
        out = []
        for b in range(len(k)):
            pos = ctx.visual_positions(b)
            out.append(pos[self.masks[ctx.layer][ctx.state.slot[b, pos]]])
        return out


@pytest.mark.parametrize("pruner", [FastV(), PyramidDrop(), PyramidDrop(positions="keep"), SparseVLM(recycle=0)],
                         ids=["fastv", "pyramiddrop", "pyramiddrop-keep", "sparsevlm"])  # fmt: skip
def test_relaxed_forward_values_equal_physically_dropping_the_masked_tokens(deep, samples, pruner):
    model, processor = deep
    a = adapter_for(model, processor)
    engine = Engine(a)
    state = a.prepare(a.encode(samples), keys=[s.index for s in samples])
    keep = torch.tensor(KEEP, requires_grad=True, device=TEST_DEVICE)
    with torch.no_grad():
        out = relaxed_prefill(engine, state, keep, pruner)
    nv = state.n_visual[0]
    assert out.live[:, 0].tolist() == [nv] * len(samples)
    assert (out.live[:, 1:] <= out.live[:, :-1]).all()  # never increases
    assert (out.live[:, -1] < nv // 2).all()  # it did prune
    for b, sample in enumerate(samples):
        alone = a.prepare(a.encode([sample]), keys=[sample.index])
        schedule = PruningSchedule(tuple(c / nv for c in out.live[b].tolist()))
        masks = [m[b].bool() for m in out.masks]
        ref = engine.prefill(alone, schedule, Fixed(masks, pruner.positions))
        assert torch.allclose(out.logits[b], ref.logits[0], atol=1e-5), (out.logits[b] - ref.logits[0]).abs().max()
        for layer, mask in enumerate(masks):  # the masks are nested: dropped tokens stay dropped
            if layer:
                assert not (mask & ~masks[layer - 1]).any()
            assert torch.equal(out.soft[layer][b], mask.float())  # straight-through: values are the hard mask


def test_gradients_reach_the_keep_ratios_of_pruning_layers(deep, samples):
    model, processor = deep
    a = adapter_for(model, processor)
    state = a.prepare(a.encode(samples), keys=[s.index for s in samples])
    keep = torch.tensor(KEEP, requires_grad=True, device=TEST_DEVICE)
    out = relaxed_prefill(Engine(a), state, keep, FastV(), Relaxation(sigma=4.0, temperature=0.5))
    loss = out.logits.log_softmax(-1)[:, :5].sum()
    loss.backward()
    g = keep.grad
    assert torch.isfinite(g).all()
    assert g[[1, 2, 4, 5]].abs().min() > 0  # every layer that pruned gets a gradient
    assert g[0] != 0  # so does layer 0, which keeps everything: what pruning there would cost


def test_soft_threshold_tends_to_the_hard_threshold_as_sigma_shrinks():
    s = torch.tensor([[9.0, 7.0, 4.0, 3.0, 1.0, 0.0]])
    k = torch.tensor([3.0])
    assert soft_threshold(s, k, 0.05).item() == pytest.approx(4.0)
    wide = soft_threshold(s, k, 2.0).item()
    assert 1.0 < wide < 7.0 and wide != pytest.approx(4.0)
    # only the first `counts` entries count; past them the threshold is the last score's
    assert soft_threshold(s, torch.tensor([4.0]), 0.05, torch.tensor([4])).item() == pytest.approx(3.0, abs=1e-3)
    assert soft_threshold(s, torch.tensor([60.0]), 0.05, torch.tensor([4])).item() == pytest.approx(3.0, abs=1e-3)
    # and it still moves with k there (a layer pruning nothing gets a gradient)
    k = torch.tensor([4.5], requires_grad=True)
    soft_threshold(s, k, 1.0, torch.tensor([4])).backward()
    assert k.grad.item() < 0  # a larger k reaches lower scores
