"""lmms-eval's own evaluator scores exported pruned models exactly as ``paretobench eval`` does.

Real end to end: the ``lmms-eval`` command with ``--model paretobench`` (found through this
package's ``lmms_eval.models`` entry point) on a local task over synth8 files (no hub), and the
in-process example (``examples/lmms_eval_in_process.py``, ``simple_evaluate``). Runs in the harness
environment (``make test-harness``).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness_checks import ROOT, RUN, export, harness, offline_env, paretobench_eval, reference_predictions

harness("lmms_eval")

from paretobench.cli import main  # noqa: E402
from paretobench.data.datasets import load_dataset  # noqa: E402
from paretobench.harnesses.lmms_eval import ParetoBench, _until, write_task  # noqa: E402


def test_the_lmms_eval_command_scores_a_runs_pick_as_paretobench_eval(tmp_path, capsys):
    data = tmp_path / "synth8"
    assert main(["data", "synth", "--out", str(data), "--n", "3", "--json"]) == 0
    cfg = export(main, tmp_path / "pick.json", "--run", str(RUN), "--budget", "0.5")
    task = write_task(str(data), tmp_path / "tasks")
    assert (task.name, task.n) == ("paretobench_synth8", 24)
    lmms_eval = str(Path(sys.executable).parent / "lmms-eval")  # the command, as a user runs it
    cmd = [lmms_eval, "--model", "paretobench", "--model_args", f"pick={tmp_path / 'pick.json'}",
           "--include_path", str(task.yaml.parent), "--tasks", task.name, "--batch_size", "8",
           "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True)
    # lmms-eval exits 0 after a failed evaluation too: its results file is the proof
    found = sorted((tmp_path / "out").rglob("*_results.json"))
    assert done.returncode == 0 and found, done.stdout[-3000:] + done.stderr[-3000:]
    theirs = json.loads(found[-1].read_text())["results"][task.name]

    ours = paretobench_eval(main, capsys, data, cfg)
    assert ours["n"] == 24
    assert theirs["accuracy,none"] == pytest.approx(ours["accuracy"], abs=1e-12)
    for category, acc in ours["per_category"].items():
        assert theirs[f"accuracy_{category},none"] == pytest.approx(acc, abs=1e-12), category
    # row by row: lmms-eval's logged answers are paretobench's batched evaluation's
    logged = [json.loads(line) for f in (tmp_path / "out").rglob(f"*_samples_{task.name}.jsonl") for line in open(f)]
    answers = {int(r["doc_id"]): r["filtered_resps"] for r in logged}
    samples = load_dataset(str(data)).samples
    assert [answers[i] for i in range(len(samples))] == reference_predictions(cfg, samples)
    print(f"lmms-eval {theirs['accuracy,none']:.4f}, paretobench eval {ours['accuracy']:.4f} (tiny-llava, run pick)")


def test_the_in_process_example_scores_as_paretobench_eval(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("lmms_eval_in_process", ROOT / "examples" / "lmms_eval_in_process.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = tmp_path / "synth8-native"
    assert main(["data", "synth", "--out", str(data), "--n", "2", "--native", "--json"]) == 0
    picks = {
        "pyramiddrop": ["--pruner", "pyramiddrop", "--preset", "pyramiddrop-default"],
        "random": ["--pruner", "random", "--schedule", "2:0.4"],  # seeded by each row's index, in both
    }
    cfgs = {name: export(main, tmp_path / f"{name}.json", "--model", "tiny-qwen2.5-vl", *args)
            for name, args in picks.items()}  # fmt: skip
    theirs = example.evaluate_picks([str(tmp_path / f"{name}.json") for name in picks], str(data), batch_size=8)
    for name, cfg in cfgs.items():
        ours = paretobench_eval(main, capsys, data, cfg)
        result = theirs[str(tmp_path / f"{name}.json")]
        assert result["n"] == ours["n"] == 16
        assert result["accuracy"] == pytest.approx(ours["accuracy"], abs=1e-12), name
        assert result["per_category"] == pytest.approx(ours["per_category"], abs=1e-12), name
        print(f"{name}: lmms-eval {result['accuracy']:.4f}, paretobench eval {ours['accuracy']:.4f}")


def test_model_args_and_stop_strings(tmp_path):
    with pytest.raises(ValueError, match="unknown model_args \\['temperature'\\]"):
        ParetoBench(pick=str(tmp_path / "x.json"), temperature="0.5")
    with pytest.raises(ValueError, match="no automatic sizing"):
        ParetoBench(pick=str(tmp_path / "x.json"), batch_size="auto")
    with pytest.raises(ValueError, match="not a readable paretobench export"):
        ParetoBench(pick=str(tmp_path / "x.json"))
    assert _until("red ASSISTANT: blue", ["ASSISTANT:"]) == "red"
    assert _until("red\n\nblue", "\n\n") == "red"
    assert _until("red", None) == "red"
