"""FitPrune against a reference written from its official code (``tests/reference/fitprune.py``):
the same tokens at every layer and the same logits for a given recipe, the same recipe from the
fit, and our budget met by the FLOPs the engine counts."""

import json

import pytest
import torch
from engine_checks import save_peaked_tiny_llava
from reference import fitprune as official
from reference.llava_loop import LlavaLoop

from paretobench.adapters import adapter_for
from paretobench.data.tsv import read_tsv
from paretobench.engine import Engine
from paretobench.flops import DecoderShape, prefill_flops
from paretobench.models.loading import load_model
from paretobench.schedule import PruningSchedule, ScheduleError
from pruners.fitprune import WINDOW, FitPrune

LAYERS = 5
N_VISUAL = 144


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny-llava with five decoder layers, saved with its processor. Its queries and keys
    are scaled up so that attention is peaked, as in a trained model: at random initialisation every
    token gets nearly the same attention, and rankings of near ties would test float rounding."""
    return save_peaked_tiny_llava(tmp_path_factory.mktemp("fitprune"), seed=5, layers=LAYERS)


@pytest.fixture(scope="module")
def ours(model_dir):
    loaded = load_model(str(model_dir))
    return adapter_for(loaded.model, loaded.processor)


@pytest.fixture(scope="module")
def eager(model_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def evaluated(synth_dir):
    return read_tsv(synth_dir / "synth8_colour.tsv")[:3]  # one family: one prompt length


@pytest.fixture(scope="module")
def calibration(synth_dir):
    return read_tsv(synth_dir / "synth8_train.tsv")[:6]  # the train split, apart from the evaluated questions


def schedule_of(scheme: dict[int, int]) -> PruningSchedule:
    """Our schedule for an official scheme (layer -> tokens removed inside it): a removal inside
    layer i is our step before layer i + 1; one inside the last layer changes nothing read."""
    counts = [N_VISUAL]
    for i in range(LAYERS - 1):
        counts.append(counts[-1] - scheme.get(i, 0))
    return PruningSchedule(tuple(c / N_VISUAL for c in counts))


def _loops(eager, adapter, samples):
    return [LlavaLoop(eager, adapter.encode([s]).inputs) for s in samples]


@pytest.mark.parametrize("scheme", [{0: 20, 1: 36, 2: 30, 3: 10, 4: 5}, {1: 100, 3: 40}], ids=["every-layer", "two"])
def test_a_recipe_keeps_the_official_tokens_and_logits(ours, eager, evaluated, scheme):
    state = ours.prepare(ours.encode(evaluated))  # a padded batch; the reference runs each alone
    result = Engine(ours).prefill(state, schedule_of(scheme), FitPrune(), trace=True)
    for b, loop in enumerate(_loops(eager, ours, evaluated)):
        kept, logits = official.fitprune(loop, scheme)
        for i, (st, want) in enumerate(zip(result.trace, kept)):
            slot = st.slot[b][st.valid[b]]
            assert slot[slot >= 0].tolist() == want.tolist(), f"row {b}, layer {i}"
        torch.testing.assert_close(result.logits[b : b + 1], logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("reduction", [0.3, 0.6, 0.9])  # 0.9: "every count leaves enough" happens
def test_the_fit_gives_the_official_recipe(ours, eager, calibration, reduction):
    config = ours.model.config.text_config
    want = official.fit(_loops(eager, ours, calibration), reduction, config.hidden_size, config.intermediate_size)
    state = ours.prepare(ours.encode(calibration))
    got = FitPrune().fit(Engine(ours), [state], 1 - reduction, 0, N_VISUAL, forecast="official")
    assert got.counts(N_VISUAL) == schedule_of(want).counts(N_VISUAL)
    assert got.counts(N_VISUAL)[-1] < N_VISUAL


@pytest.mark.parametrize("budget", [0.5, 0.7])
def test_the_fit_meets_our_budget_on_the_counted_flops(ours, calibration, evaluated, budget):
    """Counted as ``evaluate`` counts: the live tokens' prefill FLOPs plus the score rows'."""
    shape = DecoderShape.from_config(ours.model.config.text_config)
    state = ours.prepare(ours.encode(evaluated))
    n_text = [int(v) - N_VISUAL for v in state.valid.sum(1).tolist()]
    calib = ours.prepare(ours.encode(calibration))
    schedule = FitPrune().fit(Engine(ours), [calib], budget, n_text[0], N_VISUAL)
    result = Engine(ours).prefill(state, schedule, FitPrune())
    flops = sum(prefill_flops(shape, [t[b] for t in result.tokens]) + result.score_flops[b] for b in range(len(n_text)))
    full = sum(prefill_flops(shape, [t + N_VISUAL] * LAYERS) for t in n_text)
    assert budget - WINDOW <= flops / full <= budget, schedule
    assert sum(result.score_flops) > 0


def test_an_unreachable_budget_is_named(ours, calibration):
    state = ours.prepare(ours.encode(calibration))
    with pytest.raises(ScheduleError, match="cannot reach budget"):
        FitPrune().fit(Engine(ours), [state], 0.25, 40, N_VISUAL)


def test_eval_calibrates_on_the_train_split_not_the_evaluated_questions(tiny_model_dir, synth_dir, capsys):
    from paretobench.cli import main
    from paretobench.cli.eval import calibration_set
    from paretobench.data.datasets import load_dataset

    assert calibration_set(str(synth_dir)).files == [synth_dir / "synth8_train.tsv"]
    with pytest.raises(ScheduleError, match="evaluated"):
        calibration_set(str(synth_dir), str(synth_dir / "synth8_colour.tsv"), load_dataset(str(synth_dir)))
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "1", "--json",
            "--pruner", "fitprune", "--budget", "0.7"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pruner"] == {"name": "fitprune", "version": 2}
    assert 0.7 - WINDOW <= out["flops"]["fraction"] <= 0.7
    assert main(args + ["--calibration", str(synth_dir / "synth8_train.tsv")]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"] == out["schedule"]
    assert main(args + ["--calibration", str(synth_dir / "synth8_count.tsv")]) == 2
    assert "evaluated" in capsys.readouterr().err
