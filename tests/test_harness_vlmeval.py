"""VLMEvalKit's own run.py scores exported pruned models exactly as ``paretobench eval`` does.

Real end to end: ``python -m paretobench.harnesses.vlmeval`` runs VLMEvalKit's ``run.py`` (from the
installed checkout) on synth8 files in an ``$LMUData`` folder, which VLMEvalKit takes as custom MCQ
datasets, judged by its exact matching. Both embedded models; every pruner; a run's pick, given
schedules, presets and the unpruned model. Runs in the harness environment (``make test-harness``).
"""

import subprocess
import sys
import time

import pytest
from harness_checks import RUN, export, harness, offline_env, paretobench_eval, reference_predictions

harness("vlmeval")

from paretobench.cli import main  # noqa: E402
from paretobench.data.tsv import read_tsv  # noqa: E402

FAMILIES = ("colour", "shape", "count", "relation", "exist", "chart", "char", "word")
N = 2  # questions per family

# model -> (synth8 flavour, exports: name -> export-vlmeval arguments)
CASES = {
    "tiny-llava": ([], {
        "vispco-pick": ["--run", str(RUN), "--budget", "0.5"],
        "unpruned": ["--model", "tiny-llava"],
        "sparsevlm": ["--model", "tiny-llava", "--pruner", "sparsevlm", "--preset", "sparsevlm-default"],
        "vitcop": ["--model", "tiny-llava", "--pruner", "vitcop", "--preset", "vitcop-default"],
        "random": ["--model", "tiny-llava", "--pruner", "random", "--schedule", "2:0.4"],
    }),
    "tiny-qwen2.5-vl": (["--native"], {
        "fastv": ["--model", "tiny-qwen2.5-vl", "--pruner", "fastv", "--preset", "fastv-default"],
        "pyramiddrop": ["--model", "tiny-qwen2.5-vl", "--pruner", "pyramiddrop", "--preset", "pyramiddrop-default"],
        "fitprune": ["--model", "tiny-qwen2.5-vl", "--pruner", "fitprune", "--schedule", "2:0.5"],
        "spatial": ["--model", "tiny-qwen2.5-vl", "--pruner", "spatial", "--schedule", "3:0.3"],
    }),
}  # fmt: skip


def run_vlmevalkit(tmp_path, lmu, exports, datasets):
    cmd = [sys.executable, "-m", "paretobench.harnesses.vlmeval", *map(str, exports), "--data", *datasets,
           "--judge", "exact_matching", "--work-dir", str(tmp_path / "outputs")]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=offline_env(tmp_path, LMUData=lmu), capture_output=True, text=True)


@pytest.mark.parametrize("model", CASES)
def test_vlmevalkit_scores_as_paretobench_eval(model, tmp_path, capsys):
    import pandas as pd

    flavour, cases = CASES[model]
    lmu = tmp_path / "LMUData"
    assert main(["data", "synth", "--out", str(lmu), "--n", str(N), *flavour, "--json"]) == 0
    exports = {name: export(main, tmp_path / f"{name}.json", *args) for name, args in cases.items()}
    datasets = [f"synth8_{f}" for f in FAMILIES]

    t0 = time.perf_counter()
    done = run_vlmevalkit(tmp_path, lmu, [tmp_path / f"{name}.json" for name in exports], datasets)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    samples = {data: read_tsv(lmu / f"{data}.tsv") for data in datasets}
    lines = [f"{model}: VLMEvalKit run.py, {len(exports)} exports x {len(datasets)} datasets, {seconds:.1f} s"]
    for name, cfg in exports.items():
        assert cfg["model"] == model
        ours = paretobench_eval(main, capsys, lmu, cfg)
        assert ours["n"] == N * len(FAMILIES)
        expected = iter(reference_predictions(cfg, [s for data in datasets for s in samples[data]]))
        out = tmp_path / "outputs" / name
        total = 0.0
        for family, data in zip(FAMILIES, datasets):
            acc = pd.read_csv(out / f"{name}_{data}_acc.csv")
            theirs = float(acc["Overall"].iloc[0])
            assert float(acc[family].iloc[0]) == theirs
            assert theirs == pytest.approx(ours["per_category"][family], abs=1e-12), (name, family)
            total += theirs * N
            # row by row: the answers VLMEvalKit recorded are paretobench's batched evaluation's
            predictions = pd.read_excel(out / f"{name}_{data}.xlsx", keep_default_na=False).sort_values("index")
            assert [str(i) for i in predictions["index"]] == [s.index for s in samples[data]]
            assert [str(p) for p in predictions["prediction"]] == [next(expected) for _ in samples[data]], name
        assert total / ours["n"] == pytest.approx(ours["accuracy"], abs=1e-12), name
        lines.append(f"  {name}: VLMEvalKit {total / ours['n']:.4f}, paretobench eval {ours['accuracy']:.4f}")
    print("\n".join(lines))


def test_a_failed_combination_is_an_exit_code(tmp_path):
    """run.py logs a failed model x dataset and exits 0; the wrapper exits 1 and names it."""
    lmu = tmp_path / "LMUData"
    lmu.mkdir()
    export(main, tmp_path / "unpruned.json", "--model", "tiny-llava")
    done = run_vlmevalkit(tmp_path, lmu, [tmp_path / "unpruned.json"], ["synth8_nosuch"])
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "did not score paretobench on synth8_nosuch: invalid_dataset" in done.stderr
