"""The search harness end to end on a tiny random model: store, resume, kill, Ray, CLI errors."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from paretobench.cli import main
from paretobench.evaluator import Evaluator, Workload
from paretobench.run_loop import RunConfig, run
from paretobench.evaluation import Evaluation, evaluation_key
from paretobench.store import Store, StoreError

# the columns that must not change between runs (timings do)
STABLE = ["order", "key", "schedule", "flops_fraction", "accuracy", "overall", "flops", "on_frontier", "pick_for"]


@pytest.fixture(scope="module")
def cfg(tiny_model_dir, synth_dir):
    def make(out, **kw):
        base = dict(searcher="grid", pruner="fastv", model=str(tiny_model_dir), data=(str(synth_dir),), limit=2,
                    n=6, budgets=(0.5,), out=str(out), chunk=2, batch_size=8)  # fmt: skip
        return RunConfig(**{**base, **kw})

    return make


def table(outcome_or_folder):
    folder = getattr(outcome_or_folder, "folder", outcome_or_folder)
    return pd.read_csv(folder / "evaluations.csv", keep_default_na=False)[STABLE]


def test_run_writes_its_folder_and_a_rerun_recomputes_nothing(cfg, tmp_path):
    first = run(cfg(tmp_path), progress=False)
    assert first.computed == 6 and first.reused == 0
    names = {p.name for p in first.folder.iterdir()}
    assert {"config.json", "evaluations.csv", "evaluations.parquet", "frontier.csv", "frontier.png",
            "summary.json"} <= names  # fmt: skip
    t = table(first)
    assert len(t) == 6 and t.on_frontier.any()
    assert pd.read_parquet(first.folder / "evaluations.parquet")[STABLE].astype(str).equals(t.astype(str))
    summary = json.loads((first.folder / "summary.json").read_text())
    pick = summary["picks"]["0.5"]
    assert pick is None or pick["flops_fraction"] <= 0.5 + 0.005
    config = json.loads((first.folder / "config.json").read_text())
    assert config["searcher"] == "grid" and config["space"]["n_visual"] == 144 and config["samples"] == 16
    again = run(cfg(tmp_path), progress=False)
    assert again.computed == 0 and again.reused == 6 and again.name == first.name
    assert table(again).equals(t)
    # the folder keeps the account of the run that computed it: a rebuild changes no byte of it
    assert json.loads((first.folder / "summary.json").read_text()) == summary


def test_evaluations_are_shared_across_runs_by_content_key(cfg, tmp_path):
    run(cfg(tmp_path), progress=False)
    other = run(cfg(tmp_path, n=8), progress=False)  # the same seed samples the same first schedules
    assert other.reused >= 1 and other.computed + other.reused == 8


def test_the_store_keeps_what_was_evaluated(cfg, tmp_path):
    outcome = run(cfg(tmp_path), progress=False)
    store = Store(tmp_path, model=None)
    try:
        assert store.count() == 6
        ev = store.get_many([outcome.evaluations[0].key])[outcome.evaluations[0].key]
        assert len(ev.correct) == 16 and ev.accuracy == outcome.evaluations[0].accuracy
        name, groups = store.dataset(ev.data)
        assert len(groups) == 16 and len(set(groups)) == 8
        assert [r["run"] for r in store.runs()] == [outcome.name]
    finally:
        store.close()


def _cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "paretobench.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _stored(out) -> int:
    path = out / "store.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_run_killed_with_sigkill_resumes_without_losing_or_repeating_work(cfg, tmp_path, tiny_model_dir, synth_dir):
    clean = run(cfg(tmp_path / "clean", n=10, chunk=1), progress=False)
    out = tmp_path / "killed"
    args = ["run", "--searcher", "grid", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "2",
            "--n", "10", "--budgets", "0.5", "--out", str(out), "--chunk", "1", "--batch-size", "8", "--json"]  # fmt: skip
    seen = []
    for target in (2, 5):  # kill twice, at different points
        proc = _cli(*args)
        deadline = time.time() + 120
        while _stored(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(_stored(out))
    assert seen[0] >= 2 and seen[1] >= seen[0]
    proc = _cli(*args)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    store = Store(out, model=None)
    try:
        assert store.count() == 10  # nothing lost, nothing twice
        assert len(store.run_keys(clean.name)) == 10
    finally:
        store.close()
    assert table(out / clean.name).equals(table(clean))


def test_ray_runner_gives_the_local_results(cfg, tmp_path):
    local = run(cfg(tmp_path / "local"), progress=False)
    ray_run = run(cfg(tmp_path / "ray", runner="ray", workers=2), progress=False)
    assert ray_run.computed == 6
    assert table(ray_run).equals(table(local))


# ----------------------------------------------------------------------------- bad input
def test_cli_errors_are_one_line_and_keep_what_is_stored(cfg, tmp_path, capsys, tiny_model_dir, synth_dir):
    assert main(["run", "--searcher", "randm", "--json"]) == 2
    assert "did you mean 'random'" in capsys.readouterr().err
    assert main(["run", "--searcher", "grid", "--pruner", "fastvv", "--json"]) == 2
    assert "did you mean 'fastv'" in capsys.readouterr().err
    assert main(["run", "--searcher", "nsga2", "--param", "populaton=8", "--json"]) == 2  # before any load
    assert "nsga2 takes no setting 'populaton'; did you mean 'population'?" in capsys.readouterr().err
    assert main(["run", "--searcher", "vispco", "--param", "n=3", "--json"]) == 2
    assert "no setting 'n'" in capsys.readouterr().err
    assert main(["run", "--searcher", "vispco", "--param", "kernl=linear", "--json"]) == 2
    assert "did you mean 'kernel'?" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tquestion\n1\n")
    assert main(["run", "--searcher", "grid", "--model", str(tiny_model_dir), "--data", str(bad),
                 "--out", str(tmp_path / "unused"), "--json"]) == 2  # fmt: skip
    assert "bad.tsv" in capsys.readouterr().err
    assert not (tmp_path / "unused").exists()  # bad data is refused before a store is made
    # a results folder of another model
    out = tmp_path / "res"
    run(cfg(out), progress=False)
    before = (out / "store.sqlite").read_bytes()
    other = Store(tmp_path / "x", model="another")
    other.close()
    with pytest.raises(StoreError, match="another model"):
        Store(out, model="another")
    assert main(["run", "--searcher", "grid", "--model", "tiny-llava", "--data", str(synth_dir), "--out", str(out),
                 "--limit", "1", "--n", "2", "--json"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "another model" in err and err.count("\n") == 1
    assert _stored(out) == 6
    # a corrupted database: a clear error, the file left as it was
    (out / "store.sqlite").write_bytes(b"not a database" * 100)
    corrupted = (out / "store.sqlite").read_bytes()
    assert main(["runs", str(out), "--json"]) == 2
    assert "not a readable paretobench store" in capsys.readouterr().err
    assert (out / "store.sqlite").read_bytes() == corrupted
    assert before  # (the original store was written before the corruption)


def test_store_refuses_a_nondeterministic_replay(tmp_path):
    store = Store(tmp_path, model="m")
    try:
        store.begin_run("r", {"n": 1})
        store.add_items("r", 0, ["a", "b"])
        store.add_items("r", 0, ["a", "b"])  # the same replay is fine
        with pytest.raises(StoreError, match="not deterministic"):
            store.add_items("r", 1, ["c"])
        with pytest.raises(StoreError, match=r"another configuration \(n 1 -> 2\)"):
            store.begin_run("r", {"n": 2})
    finally:
        store.close()


def test_a_run_scored_under_older_rules_is_refused_not_mixed(cfg, tmp_path):
    """A run recorded before the scoring rules changed (its config has the old version, or none,
    as before the version was recorded) is not resumed under the new rules: its evaluations' keys
    carry the old version, so the new ones would be recomputed and mixed into one run."""
    first = run(cfg(tmp_path), progress=False)
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        (config,) = db.execute("SELECT config FROM runs WHERE run = ?", (first.name,)).fetchone()
        old = {k: v for k, v in json.loads(config).items() if k != "scoring"}
        db.execute("UPDATE runs SET config = ? WHERE run = ?", (json.dumps(old), first.name))
    with pytest.raises(StoreError, match=r"scoring \(none\) -> \d"):
        run(cfg(tmp_path), progress=False)


def test_evaluation_keys_depend_on_everything_that_changes_results():
    base = dict(model="m", data="d", pruner={"name": "fastv", "version": 1}, schedule=[1.0, 0.5], scoring=1,
                generation={"max_new_tokens": 16})  # fmt: skip
    k = evaluation_key(**base)
    assert evaluation_key(**{**base, "schedule": (1, 0.5000000000001)}) == k  # same schedule, other spelling
    for change in ({"model": "m2"}, {"data": "d2"}, {"pruner": {"name": "random", "seed": 0}},
                   {"pruner": {"name": "fastv", "version": 2}}, {"schedule": [1.0, 0.4]}, {"scoring": 2},
                   {"generation": {"max_new_tokens": 4}}):  # fmt: skip
        assert evaluation_key(**{**base, **change}) != k


def test_precision_other_than_float32_is_part_of_keys_and_run_names(tiny_model_dir, synth_dir):
    from paretobench.schedule import PruningSchedule

    def key(**kw):
        w = Workload(model=str(tiny_model_dir), data=(str(synth_dir),), limit=1, **kw)
        return Evaluator(w).key(PruningSchedule.parse("1,0.5", 2))

    fp32 = key()
    assert key(device="cpu") == fp32 and key(dtype="float32", threads=1) == fp32  # where it runs: not a result
    assert key(dtype="bfloat16") != fp32 != key(dtype="float16")
    run = RunConfig(searcher="grid", model=str(tiny_model_dir))
    assert RunConfig(searcher="grid", model=str(tiny_model_dir), device="cuda").run_name() == run.run_name()
    assert RunConfig(searcher="grid", model=str(tiny_model_dir), dtype="bfloat16").run_name() != run.run_name()
    assert "dtype" not in run.identity()  # float32 runs keep the names they had


def test_frontier_and_runs_commands(cfg, tmp_path, capsys):
    a = run(cfg(tmp_path), progress=False)
    b = run(cfg(tmp_path, searcher="random", n=4), progress=False)
    assert main(["frontier", str(b.folder), "--vs", str(a.folder), "--bootstrap", "20", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"igd", "igd_plus", "hv_ratio", "hausdorff", "gap", "ci95"} <= set(d)
    assert d["ci95"]["igd"][0] <= d["igd"] + 1e-12
    assert main(["frontier", str(a.folder), "--vs", str(a.folder), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["igd"] == 0 and same["hv_ratio"] == 1
    assert main(["runs", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["run"] for r in listed["runs"]) == sorted([a.name, b.name])
    assert listed["evaluations"] == len({e.key for e in a.evaluations} | {e.key for e in b.evaluations})
    assert main(["frontier", str(a.folder), str(b.folder), "--vs", str(a.folder), "--bootstrap", "0"]) == 0
    table_text = capsys.readouterr().out
    assert table_text.count(a.name) == 2 and b.name in table_text and "| igd" not in table_text.split("\n")[0]
    assert main(["frontier", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    # forgetting a run: an unknown name changes nothing; a known one loses its record and folder,
    # its evaluations stay and a rerun computes none of them again
    assert main(["runs", str(tmp_path), "--forget", b.name, "nope-123"]) == 2
    assert "no run nope-123" in capsys.readouterr().err and b.folder.is_dir()
    assert main(["runs", str(tmp_path), "--forget", b.name, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in after["runs"]] == [a.name] and not b.folder.exists()
    assert after["evaluations"] == listed["evaluations"]
    again = run(cfg(tmp_path, searcher="random", n=4), progress=False)
    assert again.name == b.name and again.computed == 0


def test_run_prints_its_distance_to_the_grid_run_of_its_folder(cfg, tmp_path, capsys, tiny_model_dir, synth_dir):
    grid = run(cfg(tmp_path), progress=False)
    args = ["run", "--searcher", "random", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "2",
            "--n", "4", "--budgets", "0.5", "--out", str(tmp_path), "--batch-size", "8"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["vs"]
    assert found["ref"] == grid.name and found["igd_plus"] >= 0
    assert main(args) == 0
    assert f"vs {grid.name}: IGD+" in capsys.readouterr().out
    other = tmp_path / "other"
    assert main([*args[:-4], "--out", str(other), "--vs", str(grid.folder), "--json"]) == 0  # a reference elsewhere
    assert json.loads(capsys.readouterr().out)["vs"]["igd_plus"] == found["igd_plus"]
    assert main([*args[:-4], "--out", str(tmp_path / "alone"), "--json"]) == 0  # no grid there: no distance
    assert json.loads(capsys.readouterr().out)["vs"] is None


def test_a_reference_from_other_weights_is_refused_before_any_work(cfg, tmp_path, capsys, tiny_model_dir, synth_dir):
    grid = run(cfg(tmp_path / "ref"), progress=False)
    config = json.loads((grid.folder / "config.json").read_text())
    (grid.folder / "config.json").write_text(json.dumps({**config, "model_fingerprint": "f" * 64}))
    args = ["run", "--searcher", "random", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "2",
            "--n", "4", "--budgets", "0.5", "--out", str(tmp_path / "mine"), "--vs", str(grid.folder)]  # fmt: skip
    assert main(args) == 2
    assert "other model weights" in capsys.readouterr().err
    assert not (tmp_path / "mine").exists()  # refused before the search started
    mine = run(cfg(tmp_path / "ref", searcher="random", n=4), progress=False)
    assert main(["frontier", str(mine.folder), "--vs", str(grid.folder)]) == 2
    assert "not comparable" in capsys.readouterr().err


def test_evaluation_round_trips_through_the_store(tmp_path):
    ev = Evaluation(key="k", data="d", pruner={"name": "fastv"}, schedule=[1.0, 0.5], flops=1e9, unpruned_flops=2e9,
                    flops_fraction=0.5, accuracy=0.75, overall=0.7, per_category={"a": 0.5, "b": 1.0},
                    correct=[True, False, True], live_visual=[144.0, 72.0], seconds=1.5)  # fmt: skip
    store = Store(tmp_path, model="m")
    try:
        store.put(ev)
        store.put(ev)  # a second put of a finished key is a no-op
        assert store.count() == 1 and store.get_many(["k", "missing"]) == {"k": ev}
    finally:
        store.close()


def test_a_run_evaluated_by_an_older_pruner_version_is_refused_not_mixed(cfg, tmp_path, monkeypatch):
    from pruners.fastv import FastV

    run(cfg(tmp_path), progress=False)
    monkeypatch.setattr(FastV, "version", FastV.version + 1)
    with pytest.raises(StoreError, match=r"pruner_config .*'version': 1.* -> .*'version': 2"):
        run(cfg(tmp_path), progress=False)


def test_pruner_parameters_and_the_generation_length_reach_the_evaluations(cfg, tmp_path):
    from dataclasses import replace

    base = run(cfg(tmp_path), progress=False)
    other = run(replace(cfg(tmp_path), pruner="pyramiddrop", pruner_params={"positions": "keep"}, max_new_tokens=3),
                progress=False)  # fmt: skip
    assert other.name != base.name
    config = json.loads((other.folder / "config.json").read_text())
    assert config["pruner_config"]["positions"] == "keep" and config["max_new_tokens"] == 3
    assert not {e.key for e in base.evaluations} & {e.key for e in other.evaluations}
    with pytest.raises(Exception, match="did you mean 'positions'"):
        run(replace(cfg(tmp_path), pruner="pyramiddrop", pruner_params={"position": "keep"}), progress=False)


def test_a_pruner_that_chooses_its_own_counts_is_refused_by_searches(cfg, tmp_path):
    from dataclasses import replace

    from paretobench.run_loop import check

    with pytest.raises(ValueError, match="chooses its own token counts"):
        check(replace(cfg(tmp_path), pruner="sparsevlm", pruner_params={"count": "rank"}))
    assert not (tmp_path / "store.sqlite").exists()
