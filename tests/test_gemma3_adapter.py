"""The Gemma 3 adapter against the model's own computations (a tiny random model built offline:
a sliding-window layer whose window is shorter than the prompt, then a full-attention layer, each
with its own rotary table; 16 visual tokens per image that attend to each other both ways)."""

import pytest
import torch
from engine_checks import (
    TEST_DEVICE,
    assert_batch_equals_alone,
    assert_greedy_matches_generate,
    assert_keep_all_matches_model,
    assert_live_counts_follow_schedules,
    score_spy,
)

from paretobench.adapters import Gemma3Adapter, adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.engine import Engine
from paretobench.schedule import PruningSchedule, keep_count
from paretobench.sequence import SeqState
from pruners.baselines import Random
from pruners.fastv import FastV

BOI, IMAGE, EOI = "<start_of_image>", "<image_soft_token>", "<end_of_image>"
SPECIAL = (BOI, IMAGE, EOI, "<start_of_turn>", "<end_of_turn>")
# Gemma's turn format; the image after the question, so the sliding window (below) cuts through it
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'image' %}" + BOI + "{% endfor %}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
IMAGE_SIZE, PATCH, VISUAL_TOKENS = 32, 4, 16  # 8x8 patches pooled to 4x4 visual tokens
# the last prompt token is 4 tokens after the image: it sees about half of the image in layer 0
SLIDING_WINDOW = 12
NEW_TOKENS = SLIDING_WINDOW + 4  # more than the window: decoding must slide it too
LAYER_TYPES = ["sliding_attention", "full_attention"]


def build_processor():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Gemma3Processor, PreTrainedTokenizerFast
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from paretobench.models.tiny_llava import vocabulary

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*vocabulary(), *SPECIAL, "user", "model"]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<end_of_turn>", pad_token="<pad>",
        extra_special_tokens={"boi_token": BOI, "image_token": IMAGE, "eoi_token": EOI,
                              "start_of_turn": "<start_of_turn>"},
    )  # fmt: skip
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_processor = Gemma3ImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                           image_seq_length=VISUAL_TOKENS)  # fmt: skip


def build_model(processor, seed: int = 0, sliding_window: int = SLIDING_WINDOW):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    tok = processor.tokenizer
    # small rope thetas and larger weights than the default init make the logits depend visibly on
    # positions; the two layer types get different tables (the full one with linear scaling, as Gemma 3 has)
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
            "full_attention": {"rope_type": "linear", "rope_theta": 100.0, "factor": 2.0}}  # fmt: skip
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=sliding_window,
                layer_types=LAYER_TYPES, rope_parameters=rope, max_position_embeddings=512,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                initializer_range=0.1)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH)  # fmt: skip
    # untied: with tied embeddings this random model's greedy decoding repeats one token
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=VISUAL_TOKENS,
                          image_token_id=tok.image_token_id, boi_token_id=tok.boi_token_id,
                          eoi_token_id=tok.eoi_token_id, initializer_range=0.1, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).to(TEST_DEVICE).eval()
    with torch.no_grad():  # initialised to zeros, which would make every visual token the same
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.2)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


@pytest.fixture(scope="module")
def tiny():
    processor = build_processor()
    return build_model(processor), processor


@pytest.fixture(scope="module")
def samples(synth_dir):
    # different prompt lengths, so a batch is left-padded
    return read_tsv(synth_dir / "synth8_colour.tsv")[:2] + read_tsv(synth_dir / "synth8_relation.tsv")[:1]


def _state(model, processor, samples, keys=None):
    a = adapter_for(model, processor)
    encoded = a.encode(samples)
    return a, encoded, a.prepare(encoded, keys=keys)


def _layers_forward(model, inputs, masks: dict, positions) -> torch.Tensor:
    """The model's decoder layers run on its own input embeddings with the given 4-D masks per layer
    type: a reference for masks that ``model(...)`` cannot be given (it builds them itself from
    ``token_type_ids``). Logits (B, L, V)."""
    lm = model.model.language_model
    with torch.no_grad():
        h = model.model(**inputs, output_hidden_states=True).hidden_states[0]  # the embeddings entering layer 0
        for layer, kind in zip(lm.layers, lm.config.layer_types):
            h = layer(h, attention_mask=masks[kind], position_ids=positions,
                      position_embeddings=lm.rotary_emb(h, positions, kind))  # fmt: skip
        return model.lm_head(lm.norm(h))


def _reference_masks(token_type_ids, attention_mask, positions, window: int) -> dict:
    """Gemma 3's masks written out: causal or inside the image block, padding (and dropped tokens)
    masked; sliding layers also need the key within ``window`` original positions."""
    n = attention_mask.shape[1]
    idx = torch.arange(n, device=attention_mask.device)
    image = token_type_ids.bool()
    full = (idx[None, None, :] <= idx[None, :, None]) | (image[:, :, None] & image[:, None, :])
    full &= attention_mask.bool()[:, None, :]
    full |= torch.eye(n, dtype=torch.bool, device=idx.device)[None]  # no empty rows (padding, dropped tokens)
    sliding = full & (positions[:, :, None] - positions[:, None, :] < window)
    return {"full_attention": full[:, None], "sliding_attention": sliding[:, None]}


def _reference_masks_with_drops(a, inputs: dict, kept: SeqState, positions) -> dict:
    """``_reference_masks`` with the visual tokens not in ``kept`` (a pruned state) masked out:
    out of attention and out of their image block."""
    mask = inputs["attention_mask"].clone()
    for b in range(mask.shape[0]):
        slots = torch.nonzero(inputs["input_ids"][b] == a.image_token_id).squeeze(1)
        dropped = torch.ones(len(slots), dtype=torch.bool, device=slots.device)
        dropped[kept.slot[b][kept.visual[b]]] = False
        mask[b, slots[dropped]] = 0
    return _reference_masks(inputs["token_type_ids"] * mask, mask, positions, SLIDING_WINDOW)


def test_two_layer_types_and_a_window_shorter_than_the_prompt(tiny, samples):
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    assert isinstance(a, Gemma3Adapter)
    assert state.n_visual == [VISUAL_TOKENS] * len(samples)
    assert not bool(state.valid.all())  # the batch is padded
    assert "token_type_ids" in encoded.inputs
    assert int(state.valid.sum(1).min()) > 3 * SLIDING_WINDOW
    cos = {kind: a.rope(state.h, state.pos, i)[0] for i, kind in enumerate(LAYER_TYPES)}
    assert not torch.allclose(cos["sliding_attention"], cos["full_attention"])


def test_keep_all_equals_the_models_own_forward(tiny, samples):
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    assert_keep_all_matches_model(model, a, encoded.inputs, state)


def test_the_window_and_the_image_block_matter(tiny, samples):
    """The reference masks equal the model's own; without the window, or with a causal image
    block, the logits differ (so the tests above see both)."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    inputs = encoded.inputs
    with torch.no_grad():
        want = model(**inputs).logits[:, -1]
    types, mask = inputs["token_type_ids"], inputs["attention_mask"]
    masks = _reference_masks(types, mask, encoded.positions, SLIDING_WINDOW)
    got = _layers_forward(model, inputs, masks, encoded.positions)[:, -1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    wide = _reference_masks(types, mask, encoded.positions, 10**6)
    causal = _reference_masks(torch.zeros_like(types), mask, encoded.positions, SLIDING_WINDOW)
    for other in (wide, causal):
        assert not torch.allclose(_layers_forward(model, inputs, other, encoded.positions)[:, -1], want, atol=1e-3)


def test_keep_all_greedy_generation_equals_generate(tiny, samples):
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    got = assert_greedy_matches_generate(model, a, encoded.inputs, state, processor.tokenizer.pad_token_id,
                                         steps=NEW_TOKENS)  # fmt: skip
    assert len(set(got.flatten().tolist())) > 3  # not one token repeated


def _generate_with_logits(a, state, schedule=None, pruner=None):
    """Greedy tokens (B, T) and every step's logits (B, T, V): the prefill's, then each decoding step's."""
    steps = []
    logits = a.logits

    def recording(h):
        steps.append(logits(h))
        return steps[-1]

    a.logits = recording
    try:
        tokens, pre = Engine(a).generate(state, schedule, pruner, max_new_tokens=NEW_TOKENS, eos_id=-1, pad_id=0)
    finally:
        del a.logits
    return tokens, torch.stack(steps, 1), pre


def _with_generated(inputs: dict, tokens: torch.Tensor) -> dict:
    """The processor inputs followed by the generated tokens that were fed back (all but the last)."""
    fed = tokens[:, :-1]
    ones = torch.ones_like(fed)
    return {**inputs, "input_ids": torch.cat([inputs["input_ids"], fed], 1),
            "attention_mask": torch.cat([inputs["attention_mask"], ones], 1),
            "token_type_ids": torch.cat([inputs["token_type_ids"], 0 * ones], 1)}  # fmt: skip


def test_decoding_logits_equal_the_models_forward_over_the_generated_tokens(tiny, samples):
    """Every decoding step's logits (KV cache, window over the cache by position) = the model's
    own forward over the prompt and the tokens generated so far."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    tokens, got, _ = _generate_with_logits(a, state)
    n = encoded.inputs["input_ids"].shape[1]
    with torch.no_grad():
        want = model(**_with_generated(encoded.inputs, tokens)).logits[:, n - 1 :]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pruner", [FastV(), Random(seed=3)], ids=lambda p: p.name)
@pytest.mark.parametrize("schedule", ["1,0.5", "0.5,0.25"])
def test_a_padded_batch_equals_each_sample_alone(tiny, samples, pruner, schedule):
    model, processor = tiny
    schedule = PruningSchedule.parse(schedule, 2)
    a, _, state = _state(model, processor, samples)
    alone = [_state(model, processor, [s], keys=[i])[2] for i, s in enumerate(samples)]
    assert_batch_equals_alone(a, state, alone, schedule, pruner)


def test_pruned_generation_of_a_padded_batch_equals_each_sample_alone(tiny, samples):
    model, processor = tiny
    schedule = PruningSchedule.parse("1,0.5", 2)
    a, _, state = _state(model, processor, samples)
    tokens, logits, _ = _generate_with_logits(a, state, schedule, FastV())
    for i, s in enumerate(samples):
        _, _, one = _state(model, processor, [s], keys=[i])
        alone_tokens, alone_logits, _ = _generate_with_logits(a, one, schedule, FastV())
        assert torch.equal(tokens[i : i + 1], alone_tokens)
        torch.testing.assert_close(logits[i : i + 1], alone_logits, rtol=0, atol=1e-5)


def test_live_visual_tokens_follow_the_schedule_per_row(tiny, samples):
    model, processor = tiny
    a, _, state = _state(model, processor, samples)
    schedules = [PruningSchedule.parse(t, 2) for t in ("0.5,0.5", "1,0.25", "0.3,0", "1,1")]
    assert_live_counts_follow_schedules(a, state, schedules)


def _eager_maps(model, inputs) -> list[torch.Tensor]:
    """Every layer's eager attention map (B, H, n, n) in the model's own forward (its own masks)."""
    layers = model.model.language_model.layers
    maps = {}
    hooks = [layer.self_attn.register_forward_hook(lambda m, i, o, k=k: maps.__setitem__(k, o[1]))
             for k, layer in enumerate(layers)]  # fmt: skip
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        model.set_attn_implementation("sdpa")
        for hook in hooks:
            hook.remove()
    return [maps[k] for k in range(len(layers))]


def test_fastv_scores_are_the_eager_attention_maps_last_row(tiny, samples):
    """FastV's scores before layer 1 (from the q/k the sliding layer 0 computed with SDPA on) =
    layer 0's eager attention map in the model's own forward, head mean, last row."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    seen = {}
    spy = score_spy(FastV, seen)
    Engine(a).prefill(state, PruningSchedule.parse("1,0.5", 2), spy)
    want = _eager_maps(model, encoded.inputs)[0].mean(1)[:, -1]  # (B, n): head-mean attention of the last position
    visual = state.visual
    torch.testing.assert_close(seen["scores"][visual], want[visual].float(), rtol=0, atol=1e-5)
    assert bool((want[visual] == 0).any()) and bool((want[visual] > 0).any())  # the window cuts the image


def test_score_rows_of_every_layer_type_are_the_eager_maps(tiny, samples):
    """Score rows of every query (text and image tokens) in both layers equal the model's own
    eager maps: the sliding window and the bidirectional image block included."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    got = []
    n = state.h.shape[1]
    query = torch.arange(n, device=state.h.device).expand(state.h.shape[0], n)
    Engine(a).observe(state, lambda ctx: got.append(ctx.attention(query)))
    for layer, want in enumerate(_eager_maps(model, encoded.inputs)):
        rows = state.valid[:, None, :, None].expand_as(want)  # padding queries' rows are not the model's concern
        torch.testing.assert_close(got[layer][rows], want[rows].float(), rtol=0, atol=1e-5)


def test_dropped_tokens_are_masked_out_of_attention_at_their_original_positions(tiny, samples):
    """Tokens dropped before layer 0 = the decoder layers run with those tokens masked out of
    Gemma 3's masks, everything else at its place (positions, sliding window by position). The
    model's own forward cannot be the reference here: it builds its masks from ``token_type_ids``
    and would let an image token attend to a masked-out token of its block, so the reference
    builds the 4-D masks itself (checked against the model's own in the test above)."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    result = Engine(a).prefill(state, PruningSchedule.parse("0.5,0.5", 2), Random(seed=1))
    inputs = encoded.inputs
    masks = _reference_masks_with_drops(a, inputs, result.state, encoded.positions)
    want = _layers_forward(model, inputs, masks, encoded.positions)[:, -1]
    torch.testing.assert_close(result.logits, want, rtol=0, atol=1e-5)
    for b in range(len(samples)):
        assert result.state.visual_counts()[b] == keep_count(0.5, state.n_visual[b])
    # the same drop made before the LLM by ``prepare``'s select hook keeps the same gaps
    kept = {s.index: result.state.slot[b][result.state.visual[b]] for b, s in enumerate(samples)}
    selected = a.prepare(encoded, samples=samples, select=lambda s, f: (f[kept[s.index]], kept[s.index]))
    torch.testing.assert_close(Engine(a).prefill(selected).logits, result.logits, rtol=0, atol=1e-5)


def test_pruned_decoding_keeps_the_gaps_in_the_window(tiny, samples):
    """After tokens are dropped before layer 0, every decoding step's logits = the decoder layers
    over the prompt and the generated tokens with the dropped tokens masked out (the window over
    the cache counts original positions, gaps included)."""
    model, processor = tiny
    a, encoded, state = _state(model, processor, samples)
    tokens, got, pre = _generate_with_logits(a, state, PruningSchedule.parse("0.5,0.5", 2), Random(seed=1))
    inputs = _with_generated(encoded.inputs, tokens)
    positions = torch.cat([encoded.positions, encoded.positions[:, -1:] + torch.arange(1, tokens.shape[1], device=tokens.device)], 1)
    masks = _reference_masks_with_drops(a, inputs, pre.state, positions)
    n = encoded.inputs["input_ids"].shape[1]
    want = _layers_forward(model, inputs, masks, positions)[:, n - 1 :]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_vision_extras_are_the_attention_each_pooled_token_receives_in_the_towers_last_layer(tiny, samples):
    """SigLIP has no CLS token: the saliency is the head-mean attention each patch receives in the
    last layer (eager maps), averaged over queries and summed over the 2x2 patches pooled into one
    visual token; the keys are those patches' mean."""
    model, processor = tiny
    a = adapter_for(model, processor)
    layer = model.model.vision_tower.encoder.layers[-1]
    seen = {}
    hooks = [layer.self_attn.register_forward_hook(lambda m, i, o: seen.__setitem__("map", o[1])),
             layer.self_attn.k_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o))]  # fmt: skip
    model.model.vision_tower.set_attn_implementation("eager")
    try:
        encoded = a.encode(samples, vision_extras=True)
    finally:
        model.model.vision_tower.set_attn_implementation("sdpa")
        for h in hooks:
            h.remove()
    received = seen["map"].float().mean(1).mean(1)  # (B, 64): per patch, over heads and queries
    grid = received.view(len(samples), 4, 2, 4, 2).sum((2, 4)).flatten(1)  # 2x2 patches per visual token
    torch.testing.assert_close(encoded.by_slot["vision_cls_attention"], grid, rtol=0, atol=1e-6)
    keys = seen["k"].float().view(len(samples), 4, 2, 4, 2, -1).mean((2, 4)).flatten(1, 2)
    torch.testing.assert_close(encoded.by_slot["vision_keys"], keys, rtol=0, atol=1e-6)
    # and ViTCoP's preset runs on it: its vision stage, shallow and deep steps
    from pruners.vitcop import ViTCoP

    pruner = ViTCoP()
    schedule = PruningSchedule.steps(2, {0: 0.5, 1: 0.25})
    result = Engine(a).prefill(a.prepare(encoded), schedule, pruner)
    assert result.live_visual == [[keep_count(k, 16)] * len(samples) for k in schedule.keep]
