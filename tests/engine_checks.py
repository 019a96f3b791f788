"""Checks shared by the engine's and the adapters' tests."""

import os

import torch

from paretobench.engine import Engine

# where the adapters' tests put their models: `PARETOBENCH_TEST_DEVICE=cuda pytest tests/test_engine.py
# tests/test_qwen_adapter.py tests/test_gemma3_adapter.py tests/test_embedded.py` runs them on a GPU
TEST_DEVICE = os.environ.get("PARETOBENCH_TEST_DEVICE", "cpu")


def score_spy(pruner_cls, seen: dict):
    """A ``pruner_cls`` that records the scores it computes in ``seen["scores"]``."""

    class Spy(pruner_cls):
        def scores(self, ctx):
            seen["scores"] = super().scores(ctx)
            return seen["scores"]

    return Spy()


def eager_attention(model, adapter, state, layer: int) -> torch.Tensor:
    """Layer ``layer``'s (B, H, n, n) attention map in the unpruned prefill, from eager attention."""
    seen = {}
    model.set_attn_implementation("eager")
    try:
        hook = adapter.layers[layer].self_attn.register_forward_hook(lambda m, i, o: seen.__setitem__("map", o[1]))
        try:
            Engine(adapter).prefill(state)
        finally:
            hook.remove()
    finally:
        model.set_attn_implementation("sdpa")
    return seen["map"]


# A padded batch and a sample alone have different shapes, so a GPU runs them through different
# matmul and attention kernels (fp32 still). Measured on an H100: the model's own forward gives
# the shipped tiny-llava's last logits up to 1.7e-3 apart between the two; the engine's stay
# within 2.6e-5 of each other on the tests' tiny models (on the CPU, 1e-5 holds).
BATCH_ATOL = 1e-5 if TEST_DEVICE == "cpu" else 5e-5


def assert_batch_equals_alone(adapter, batch_state, alone_states, schedule, pruner) -> None:
    """Row i of the padded batch = sample i run alone: logits (1e-5 on the CPU) and score FLOPs."""
    batch = Engine(adapter).prefill(batch_state, schedule, pruner)
    for i, one in enumerate(alone_states):
        alone = Engine(adapter).prefill(one, schedule, pruner)
        torch.testing.assert_close(batch.logits[i : i + 1], alone.logits, rtol=0, atol=BATCH_ATOL)
        assert batch.score_flops[i] == alone.score_flops[0]
        assert [layer[i] for layer in batch.live_visual] == [layer[0] for layer in alone.live_visual]


def assert_keep_all_matches_model(model, adapter, inputs, state) -> None:
    """Keep-all logits of the engine = the model's own forward (last position, 1e-5)."""
    got = Engine(adapter).prefill(state).logits
    with torch.no_grad():
        want = model(**inputs).logits[:, -1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def assert_greedy_matches_generate(model, adapter, inputs, state, pad_id: int, steps: int = 5) -> torch.Tensor:
    """Keep-all greedy tokens of the engine = ``model.generate`` without sampling; returns them."""
    got, _ = Engine(adapter).generate(state, max_new_tokens=steps, eos_id=-1, pad_id=pad_id)
    with torch.no_grad():
        want = model.generate(**inputs, max_new_tokens=steps, do_sample=False, eos_token_id=None)
    assert torch.equal(got, want[:, inputs["input_ids"].shape[1] :])
    return got


def assert_live_counts_follow_schedules(adapter, state, schedules) -> None:
    """Live visual tokens at each layer = round_half_up(keep * Nv), per row."""
    from paretobench.schedule import keep_count
    from pruners.fastv import FastV

    for schedule in schedules:
        result = Engine(adapter).prefill(state, schedule, FastV())
        assert result.live_visual == [[keep_count(k, nv) for nv in state.n_visual] for k in schedule.keep], schedule


def save_peaked_tiny_llava(out, *, seed: int, layers: int):
    """A random tiny-llava with ``layers`` decoder layers, saved with its processor in ``out``. Its
    queries and keys are scaled up so that attention is peaked, as in a trained model: at random
    initialisation every token gets nearly the same attention, and rankings of near ties would test
    float rounding rather than the algorithms a parity test compares."""
    from paretobench.models.tiny_llava import build_model, build_processor

    processor = build_processor()
    model = build_model(processor, seed=seed, text_layers=layers, text_hidden=64, vision_layers=1)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
            layer.self_attn.k_proj.weight.mul_(6.0)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
