"""A golden frontier: every pruner under a few schedules on the shipped tiny-llava, and the
frontier metrics of the points, against a committed reference (``tests/golden/frontier.json``).
Any silent drift in the engine, a pruner, the FLOPs count, the scoring or the metrics changes a
number here. After an intended change (a pruner's version bumped, say), rewrite the reference
with ``PARETOBENCH_GOLDEN=write pytest tests/test_golden.py`` and commit it with the change."""

import json
import os
from pathlib import Path

import pytest

from paretobench.data.datasets import load_dataset
from paretobench.measure import evaluate_many
from paretobench.models.loading import load_model
from paretobench.pareto import distances, points
from paretobench.registry import PRUNERS, build_pruner
from paretobench.schedule import PruningSchedule

GOLDEN = Path(__file__).parent / "golden" / "frontier.json"
SCHEDULES = ("2:0.5", "1:0.75,4:0.25", "0:0.6,3:0.3,6:0.1", "1,1,1,0.4,0.4,0.2,0.2,0")


def _measure() -> dict:
    loaded = load_model("tiny-llava")
    samples = load_dataset("synth8", limit=6).samples  # 48 questions, 6 per family
    calibration = load_dataset("synth8-train", limit=4).samples
    out = {}
    for name in PRUNERS.names():
        pruner = build_pruner(name)
        schedules = [PruningSchedule.parse(s, 8) for s in SCHEDULES]
        if hasattr(pruner, "fit"):  # a fitted pruner's own recipe too
            from paretobench.adapters import adapter_for, token_counts
            from paretobench.engine import Engine

            a = adapter_for(loaded.model, loaded.processor)
            state = a.prepare(a.encode(calibration), keys=[s.index for s in calibration])
            texts, visuals = (t.tolist() for t in token_counts(a, samples))
            schedules.append(pruner.fit(Engine(a), [state], 0.5, texts, visuals))
        results = evaluate_many(loaded.model, loaded.processor, samples, [(s, pruner) for s in schedules],
                                max_new_tokens=4)  # fmt: skip
        rows = [{"schedule": str(s), "accuracy": r.scores["mean_of_categories"],
                 "flops_fraction": r.llm_prefill_flops / r.unpruned_flops, "predictions": r.predictions,
                 "live_visual": r.live_visual} for s, r in zip(schedules, results)]  # fmt: skip
        out[name] = {"version": pruner.version, "rows": rows}
    ref = points([r["flops_fraction"] for r in out["fastv"]["rows"]], [r["accuracy"] for r in out["fastv"]["rows"]])
    for name, entry in out.items():
        F = points([r["flops_fraction"] for r in entry["rows"]], [r["accuracy"] for r in entry["rows"]])
        entry["metrics_vs_fastv"] = {k: v for k, v in distances(F, ref).items() if isinstance(v, float)}
    return out


@pytest.fixture(scope="module")
def measured():
    return _measure()


def test_the_golden_frontier_has_not_drifted(measured):
    if os.environ.get("PARETOBENCH_GOLDEN") == "write":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(measured, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(measured) == set(golden), "pruners registered or removed: rewrite the golden file"
    for name, want in golden.items():
        got = measured[name]
        assert got["version"] == want["version"], f"{name}'s version changed: rewrite the golden file with it"
        for g, w in zip(got["rows"], want["rows"], strict=True):
            assert g["schedule"] == w["schedule"], name
            assert g["predictions"] == w["predictions"], (name, g["schedule"])
            assert g["live_visual"] == pytest.approx(w["live_visual"]), (name, g["schedule"])
            assert g["accuracy"] == pytest.approx(w["accuracy"], abs=1e-9), (name, g["schedule"])
            assert g["flops_fraction"] == pytest.approx(w["flops_fraction"], rel=1e-9), (name, g["schedule"])
        for k, v in want["metrics_vs_fastv"].items():
            assert got["metrics_vs_fastv"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (name, k)
