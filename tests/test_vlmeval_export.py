"""Exporting a schedule for VLMEvalKit, and the exported model's answers (VLMEvalKit itself
needs torchvision, which has no CPU build; what runs without it is tested here)."""

import base64
import json

import pytest

from paretobench.cli import main
from paretobench.data.datasets import load_dataset
from paretobench.measure import evaluate
from paretobench.registry import PRUNERS
from paretobench.schedule import PruningSchedule
from paretobench.harnesses.vlmeval import PrunedModel, read_export

from harness_checks import RUN  # the committed default VisPCO-FastV run


def test_export_of_a_runs_pick(tmp_path, capsys):
    out = tmp_path / "pick.json"
    assert main(["export-vlmeval", "--run", str(RUN), "--budget", "0.5", "--out", str(out), "--json"]) == 0
    export = read_export(out)
    pick = json.loads((RUN / "summary.json").read_text())["picks"]["0.5"]["schedule"]
    assert export["model"] == "tiny-llava" and export["pruner"] == "fastv"
    # the run's pruner settings, not its searcher's (the default VisPCO run has --param train=...)
    assert export["params"] == json.loads((RUN / "config.json").read_text())["pruner_params"]
    assert [float(k) for k in export["schedule"].split(",")] == pytest.approx(pick, abs=1e-6)
    assert PruningSchedule.parse(export["schedule"], 8).counts(144) == PruningSchedule(tuple(pick)).counts(144)
    assert json.loads(capsys.readouterr().out)["out"] == str(out)


def test_export_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert main(["export-vlmeval", "--run", str(RUN), "--budget", "0.55", "--out", str(out)]) == 2
    assert "no pick for budget 0.55" in capsys.readouterr().err
    assert main(["export-vlmeval", "--run", str(tmp_path), "--budget", "0.5", "--out", str(out)]) == 2
    assert "not a finished paretobench run" in capsys.readouterr().err
    assert main(["export-vlmeval", "--model", "tiny-llava", "--schedule", "1,1,0.5", "--out", str(out)]) == 2
    assert not out.exists()
    (tmp_path / "bad.json").write_text('{"model": "tiny-llava"}')
    with pytest.raises(ValueError, match="missing \\['pruner', 'schedule'\\]"):
        read_export(tmp_path / "bad.json")


def test_exported_model_answers_as_the_evaluator_does(tmp_path, synth_dir):
    out = tmp_path / "fastv.json"
    assert main(["export-vlmeval", "--model", "tiny-llava", "--preset", "fastv-default", "--out", str(out)]) == 0
    pruned = PrunedModel(out)
    samples = load_dataset(str(synth_dir), limit=1).samples
    reference = evaluate(pruned.loaded.model, pruned.loaded.processor, samples, schedule=pruned.schedule,
                         pruner=PRUNERS.get("fastv")(), max_new_tokens=16)  # fmt: skip
    for s, expected in zip(samples, reference.predictions):
        image = tmp_path / f"{s.index}.png"
        image.write_bytes(base64.b64decode(s.image_b64))
        # VLMEvalKit's message: the image file, then the MCQ prompt it built (the same text)
        message = [{"type": "image", "value": str(image)}, {"type": "text", "value": s.prompt()}]
        assert pruned.answer_message(message) == expected.strip()
    with pytest.raises(ValueError, match="exactly one image; the message has 0"):
        pruned.answer_message([{"type": "text", "value": "hi"}])
