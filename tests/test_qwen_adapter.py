"""The Qwen2-VL / Qwen2.5-VL adapter against the model's own computations (tiny random models
built offline: native-resolution images of different sizes, 3-D M-RoPE positions)."""

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
from paretobench.adapters import QwenVLAdapter, UnsupportedModel, adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.models.loading import image_only
from paretobench.models.tiny_qwen import CHAT_TEMPLATE, QWEN_TOKENS as SPECIAL
from paretobench.engine import Engine
from paretobench.registry import PRUNERS
from paretobench.schedule import PruningSchedule, keep_count
from pruners.baselines import Random
from pruners.fastv import FastV

PATCH = 8  # with 2x2 merging, one visual token per 16x16 pixels
# per sample (by index): image size (width, height) -> visual tokens (12, 4, 12 in a transposed grid)
IMAGE_SIZES = [(64, 48), (32, 32), (48, 64)]


def build_processor(kind: str):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from paretobench.models.tiny_qwen import build_tokenizer

    tokenizer = build_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=64 * 64)  # fmt: skip
    base = Qwen2_5_VLProcessor if kind == "qwen2_5_vl" else Qwen2VLProcessor
    # the video processor's class check needs torchvision (not installed); images only here
    return image_only(base)(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build_model(kind: str, processor, seed: int = 0, layers: int = 2):
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration)  # fmt: skip

    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                # head_dim 16: 8 rotary frequencies split over (temporal, height, width); a small theta
                # and larger weights than the default init make the logits depend visibly on positions
                rope_parameters={"rope_type": "default", "rope_theta": 100.0, "mrope_section": [2, 3, 3]},
                initializer_range=0.1)  # fmt: skip
    if kind == "qwen2_5_vl":
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2, window_size=32,
                      fullatt_block_indexes=[0])  # fmt: skip
    else:
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision = dict(depth=1, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=PATCH,
                      spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    config = config_cls(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False, initializer_range=0.1,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = model_cls(config).to(TEST_DEVICE).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def tiny(request):
    processor = build_processor(request.param)
    return build_model(request.param, processor), processor


@pytest.fixture(scope="module")
def samples(synth_dir):
    # different prompt lengths and image sizes, so a batch is left-padded
    return read_tsv(synth_dir / "synth8_colour.tsv")[:2] + read_tsv(synth_dir / "synth8_relation.tsv")[:1]


def _image_fn(samples):
    sizes = {s.index: size for s, size in zip(samples, IMAGE_SIZES)}
    return lambda s: s.image().resize(sizes[s.index])


def _state(model, processor, samples, batch=None, keys=None):
    """Encode ``batch`` (default: all samples), each sample's image at its own size."""
    a = adapter_for(model, processor)
    encoded = a.encode(batch or samples, _image_fn(samples))
    return a, encoded, a.prepare(encoded, keys=keys)


def test_positions_are_3d_and_rows_have_different_visual_counts(tiny, samples):
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    assert isinstance(a, QwenVLAdapter)
    assert state.n_visual == [12, 4, 12]
    assert not bool(state.valid.all())  # the batch is padded
    assert state.pos.shape == (3, *state.valid.shape)
    visual = state.visual
    assert bool((state.pos[1][visual] != state.pos[2][visual]).any())  # height and width differ in an image
    assert bool((state.pos[0][~visual] == state.pos[1][~visual]).all())  # text: the same on every axis


def test_mm_token_type_ids_are_built_when_the_processor_gives_none(tiny, samples):
    model, processor = tiny
    a = adapter_for(model, processor)
    want = a.encode(samples, _image_fn(samples))
    original = a._processor_inputs

    def without_types(*args):
        inputs = original(*args)
        del inputs["mm_token_type_ids"]
        return inputs

    a._processor_inputs = without_types
    got = a.encode(samples, _image_fn(samples))
    assert torch.equal(got.inputs["mm_token_type_ids"], want.inputs["mm_token_type_ids"])
    assert torch.equal(got.positions, want.positions)


def test_keep_all_equals_the_models_own_forward(tiny, samples):
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    assert_keep_all_matches_model(model, a, encoded.inputs, state)


def test_keep_all_greedy_generation_equals_generate(tiny, samples):
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    assert_greedy_matches_generate(model, a, encoded.inputs, state, processor.tokenizer.pad_token_id, steps=5)


@pytest.mark.parametrize("pruner", [FastV(), Random(seed=3)], ids=lambda p: p.name)
@pytest.mark.parametrize("schedule", ["1,0.5", "0.5,0.25"])
def test_a_padded_batch_equals_each_sample_alone(tiny, samples, pruner, schedule):
    model, processor = tiny
    schedule = PruningSchedule.parse(schedule, 2)
    a, _, state = _state(model, processor, samples)
    alone = [_state(model, processor, samples, batch=[s], keys=[i])[2] for i, s in enumerate(samples)]
    assert_batch_equals_alone(a, state, alone, schedule, pruner)


def test_live_visual_tokens_follow_the_schedule_per_row(tiny, samples):
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    schedules = [PruningSchedule.parse(t, 2) for t in ("0.5,0.5", "1,0.25", "0.3,0", "1,1")]
    assert_live_counts_follow_schedules(a, state, schedules)


def test_fastv_scores_are_the_eager_attention_maps_last_row(tiny, samples):
    """FastV's scores before layer 1 (from the q/k layer 0 computed with SDPA on) = layer 0's
    eager attention map, head mean, last row."""
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    seen = {}
    spy = score_spy(FastV, seen)
    Engine(a).prefill(state, PruningSchedule.parse("1,0.5", 2), spy)
    seen["eager"] = eager_attention(model, a, state, 0)
    want = seen["eager"].mean(1)[:, -1]  # (B, n): head-mean attention of the last position
    visual = state.visual
    torch.testing.assert_close(seen["scores"][visual], want[visual].float(), rtol=0, atol=1e-5)


def test_dropped_tokens_leave_the_original_3d_positions(tiny, samples):
    """Tokens dropped before layer 0 = the model's own forward with them masked out of attention
    and the full sequence's (3, B, L) positions passed explicitly."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    result = Engine(a).prefill(state, PruningSchedule.parse("0.5,0.5", 2), Random(seed=1))
    inputs = encoded.inputs
    mask = inputs["attention_mask"].clone()
    for b in range(len(samples)):
        slots = torch.nonzero(inputs["input_ids"][b] == a.image_token_id).squeeze(1)
        kept = result.state.slot[b][result.state.visual[b]]
        assert len(kept) == keep_count(0.5, state.n_visual[b])
        dropped = torch.ones(len(slots), dtype=torch.bool, device=slots.device)
        dropped[kept] = False
        mask[b, slots[dropped]] = 0
    with torch.no_grad():
        want = model(**{**inputs, "attention_mask": mask}, position_ids=encoded.positions).logits[:, -1]
    torch.testing.assert_close(result.logits, want, rtol=0, atol=1e-5)
    # the same drop made before the LLM by ``prepare``'s select hook keeps the same gaps
    kept = {s.index: result.state.slot[b][result.state.visual[b]] for b, s in enumerate(samples)}
    selected = a.prepare(encoded, samples=samples, select=lambda s, f: (f[kept[s.index]], kept[s.index]))
    torch.testing.assert_close(Engine(a).prefill(selected).logits, result.logits, rtol=0, atol=1e-5)
    # and 1-D positions would give other logits: the test sees M-RoPE
    flat = encoded.positions[0:1].expand(3, -1, -1)
    with torch.no_grad():
        other = model(**{**inputs, "attention_mask": mask}, position_ids=flat).logits[:, -1]
    assert not torch.allclose(other, want, atol=1e-2)


def _reference_vision_extras(model, pixel_values, grid):
    """ViTCoP's vision-stage inputs computed by hand: the last vision block's input captured by a
    hook, q/k from its own norm and projection with the rotary tables it was given, each image's
    full softmax map, the attention each patch receives (head mean, query mean) summed per merge
    unit, and keys averaged per merge unit; put in the order of the model's merged features,
    found by matching the merger's rows (the blocks' order) to them."""
    visual = model.model.visual
    block, seen = visual.blocks[-1], {}
    hooks = [block.register_forward_pre_hook(lambda m, a, kw: seen.update(x=a[0], rope=kw["position_embeddings"]),
                                             with_kwargs=True),
             visual.merger.register_forward_hook(lambda m, i, o: seen.__setitem__("merged", o))]  # fmt: skip
    try:
        with torch.no_grad():
            feats = visual(pixel_values, grid_thw=grid).pooler_output
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        x = block.norm1(seen["x"])
        n, heads = x.shape[0], block.attn.num_heads
        q, k, _ = block.attn.qkv(x).view(n, 3, heads, -1).unbind(1)  # (n, H, e)

    def rotate(t):
        cos, sin = (r[:, None, :] for r in seen["rope"])
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    q, k = rotate(q), rotate(k)
    unit = visual.spatial_merge_size**2
    saliency, keys, start = [], [], 0
    for size in grid.prod(-1).tolist():  # an image's patches are contiguous in the blocks' order
        qi, ki = q[start : start + size], k[start : start + size]
        probs = (torch.einsum("qhe,khe->hqk", qi, ki) * qi.shape[-1] ** -0.5).softmax(-1)  # (H, n_i, n_i)
        saliency.append(probs.mean(0).mean(0).view(-1, unit).sum(1))
        keys.append(ki.reshape(size // unit, unit, -1).mean(1))
        start += size
    saliency, keys = torch.cat(saliency), torch.cat(keys)
    same = (feats[:, None] == seen["merged"][None]).all(-1)  # (decoder token, merger row)
    assert bool((same.sum(1) == 1).all())
    order = same.float().argmax(1)
    return saliency[order], keys[order], order


def test_vision_extras_are_the_last_blocks_received_attention_in_decoder_order(tiny, samples):
    """No CLS token: the saliency is the attention each merged token's patches receive in the
    last vision block, per image; it and the keys equal a hand computation, row by row, for two
    images of different sizes (12 and 4 tokens, the shorter row zero-padded)."""
    model, processor = tiny
    a = adapter_for(model, processor)
    encoded = a.encode(samples[:2], _image_fn(samples), vision_extras=True)
    inputs = encoded.inputs
    saliency, keys, order = _reference_vision_extras(model, inputs["pixel_values"], inputs["image_grid_thw"])
    if model.config.model_type == "qwen2_5_vl":  # windows: the blocks' order is not the decoder's
        assert not torch.equal(order, torch.arange(len(order), device=order.device))
        assert not torch.allclose(saliency, saliency[torch.argsort(order)], atol=1e-4)  # the reordering shows
    got_saliency, got_keys = encoded.by_slot["vision_cls_attention"], encoded.by_slot["vision_keys"]
    counts = [f.shape[0] for f in encoded.feats]
    assert counts == [12, 4] and got_saliency.shape == (2, 12) and got_keys.shape == (2, 12, keys.shape[-1])
    for b, (want_s, want_k) in enumerate(zip(saliency.split(counts), keys.split(counts))):
        n = counts[b]
        torch.testing.assert_close(got_saliency[b, :n], want_s, rtol=0, atol=1e-5)
        torch.testing.assert_close(got_keys[b, :n], want_k, rtol=0, atol=1e-5)
        assert float(got_saliency[b, :n].sum()) == pytest.approx(1.0, abs=1e-5)  # an image's attention, all of it
        assert not bool(got_saliency[b, n:].any()) and not bool(got_keys[b, n:].any())
    # the hooks leave the features as they were
    plain = a.encode(samples[:2], _image_fn(samples))
    for f, g in zip(encoded.feats, plain.feats):
        assert torch.equal(f, g)


def test_vision_extras_refuse_a_last_block_that_attends_in_windows(samples):
    processor = build_processor("qwen2_5_vl")
    model = build_model("qwen2_5_vl", processor)
    model.model.visual.fullatt_block_indexes = []  # every block windowed: no per-image attention to read
    with pytest.raises(UnsupportedModel, match="whole images"):
        adapter_for(model, processor).encode(samples[:1], _image_fn(samples), vision_extras=True)


def test_vitcop_preset_runs_on_qwen_images_of_different_sizes(samples):
    """The registry's ViTCoP with its preset on a 4-layer Qwen2.5-VL: the vision stage (before
    layer 0), the early and the deep LLM stages; live visual tokens per layer and row follow the
    schedule, the vision stage keeps each image's most salient tokens, and each row of the padded
    batch equals that sample alone."""
    processor = build_processor("qwen2_5_vl")
    model = build_model("qwen2_5_vl", processor, layers=4)
    a = adapter_for(model, processor)
    pruner = PRUNERS.get("vitcop")()
    schedule = pruner.preset(a.num_layers)
    assert schedule.keep == (0.5, 253 / 576, 253 / 576, 51 / 576)  # the official 192-token setting, scaled
    image_fn = _image_fn(samples)
    state = a.prepare(a.encode(samples, image_fn, vision_extras=True))
    assert state.n_visual == [12, 4, 12]
    result = Engine(a).prefill(state, schedule, pruner)
    assert result.live_visual == [[keep_count(k, nv) for nv in state.n_visual] for k in schedule.keep]
    # the vision stage alone: the top half of every image by the vision saliency
    kept = Engine(a).prefill(state, PruningSchedule.parse("0.5,0.5,0.5,0.5", 4), pruner).state
    saliency = state.by_slot["vision_cls_attention"]
    for b, nv in enumerate(state.n_visual):
        want = torch.sort(saliency[b, :nv], descending=True, stable=True).indices[: keep_count(0.5, nv)]
        assert torch.equal(kept.slot[b][kept.visual[b]], want.sort().values)
    alone = [a.prepare(a.encode([s], image_fn, vision_extras=True), keys=[i]) for i, s in enumerate(samples)]
    assert_batch_equals_alone(a, state, alone, schedule, pruner)


def test_a_batch_split_into_rows_and_stacked_again_is_the_batch(tiny, samples):
    """``SeqState.rows``/``stack`` (VisPCO's training cache) rebuild ``prepare``'s padded batch
    exactly, whatever order the rows come back in."""
    from paretobench.sequence import SeqState

    model, processor = tiny
    a, _, state = _state(model, processor, samples, keys=["a", "b", "c"])
    rows = state.rows()
    assert [r.n_visual for r in rows] == [[12], [4], [12]] and all(bool(r.valid.all()) for r in rows)
    again = SeqState.stack(rows)
    for name in ("h", "pos", "valid", "slot", "h0"):
        assert torch.equal(getattr(again, name), getattr(state, name)), name
    assert again.keys == state.keys and again.n_visual == state.n_visual
    # another order: the same as preparing the samples in that order
    order = [2, 1, 0]
    _, _, want = _state(model, processor, samples, batch=[samples[i] for i in order], keys=["c", "b", "a"])
    got = SeqState.stack([rows[i] for i in order])
    for name in ("h", "pos", "valid", "slot"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
