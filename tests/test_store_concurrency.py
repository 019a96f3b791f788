"""Several processes writing one results folder at once: real processes, one SQLite file."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from paretobench.store import Store

# Per results folder in turn, each writer waits for the same moment (so the writers race for
# each one), then opens the store, claiming it for its model, records runs shared by all writers
# (the same command) and one of its own, and keeps evaluations that overlap the other writers'
# ones. It prints, per folder, "claimed", "refused" (another model's folder) or another error.
WRITER = textwrap.dedent("""
    import sys, time
    from paretobench.evaluation import Evaluation
    from paretobench.store import Store, StoreError
    root, model, me, start, folders = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    for folder in range(folders):
        while time.time() < start + 0.25 * folder:
            time.sleep(0.001)
        try:
            store = Store(f"{root}/{folder}", model=model)
        except StoreError as e:
            print("refused" if "another model" in str(e) else e, flush=True)
            continue
        print("claimed", flush=True)
        shared, own = [f"k{i}" for i in range(30)], [f"k{i}" for i in range(me * 10, me * 10 + 30)]
        runs = [(f"shared{r}", shared) for r in range(5)] + [(f"own{me}", own)]
        for run, keys in runs:
            store.begin_run(run, {"n": 30})
            store.add_items(run, 0, keys)
        for k in dict.fromkeys(shared + own):
            store.put(Evaluation(key=k, data="d", pruner={}, schedule=[1.0], flops=1.0, unpruned_flops=2.0,
                                 flops_fraction=0.5, accuracy=0.5, overall=0.5, per_category={}, correct=[True],
                                 live_visual=[1.0], seconds=float(me)))
        for run, _ in runs:
            store.finish_run(run)
        store.close()
""")


def _start(root, models, *, folders, start_in=3.0):
    start = time.time() + start_in  # after every interpreter has started
    return [subprocess.Popen([sys.executable, "-c", WRITER, str(root), m, str(i), str(start), str(folders)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, m in enumerate(models)]  # fmt: skip


def _finish(procs):
    """Per writer: its exit status, what it said per folder, its stderr."""
    outs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out.split("\n")[:-1], err) for p, (out, err) in zip(procs, outs)]


def _check(folder, writers):
    """The store holds the union of the ``writers``' evaluations, each once, and their runs, finished."""
    store = Store(folder, model=None)
    try:
        runs = {r["run"]: r for r in store.runs()}
        assert set(runs) == {*(f"shared{r}" for r in range(5)), *(f"own{i}" for i in writers)}
        assert all(r["finished"] is not None and r["items"] == 30 for r in runs.values())
        assert store.count() == len({k for run in runs for k in store.run_keys(run)})
        return store.meta()["model"]
    finally:
        store.close()


def test_writers_at_once_keep_every_evaluation_once(tmp_path):
    folders = 4
    results = _finish(_start(tmp_path, ["m"] * 6, folders=folders))
    assert all(rc == 0 and said == ["claimed"] * folders for rc, said, _ in results), results
    for folder in range(folders):
        _check(tmp_path / str(folder), range(6))


def test_writers_wait_for_the_write_lock_before_they_check(tmp_path):
    """Writers of two models open a store no model has claimed yet, and begin the same runs,
    while another writer holds the write lock: each checks only once it holds the lock itself,
    so one model claims the folder and the other's writers are refused (none is let into a
    folder of another model), and each run is recorded once, without a clash."""
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "store.sqlite").touch()
    Store(tmp_path / "0", model=None).close()  # the tables, no model
    holder = sqlite3.connect(tmp_path / "0" / "store.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    procs = _start(tmp_path, ["a", "b", "a", "b"], folders=1, start_in=0)
    time.sleep(4)  # every writer has started and waits for the lock
    holder.execute("COMMIT")
    holder.close()
    results = _finish(procs)
    assert all(rc == 0 for rc, _, _ in results), results
    winners = [i for i, (_, said, _) in enumerate(results) if said == ["claimed"]]
    assert winners in ([0, 2], [1, 3]) and all(results[i][1] == ["refused"] for i in {0, 1, 2, 3} - set(winners))
    assert _check(tmp_path / "0", winners) == "abab"[winners[0]]


@pytest.fixture(scope="module")
def command(tiny_model_dir, synth_dir):
    def make(out, searcher, *extra):
        return [sys.executable, "-m", "paretobench.cli", "run", "--searcher", searcher, "--model", str(tiny_model_dir),
                "--data", str(synth_dir), "--limit", "1", "--n", "4", "--budgets", "0.5", "--chunk", "1",
                "--batch-size", "8", "--threads", "1", "--out", str(out), "--json", *extra]  # fmt: skip

    return make


def _at_once(*commands):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err for _, err in outs]
    return [json.loads(out) for out, _ in outs]


@pytest.mark.parametrize("searchers", [("random", "grid"), ("grid", "grid")], ids=["two-searchers", "same-command"])
def test_two_runs_at_once_into_one_folder_lose_and_duplicate_nothing(command, tmp_path, searchers):
    summaries = _at_once(*(command(tmp_path, s) for s in searchers))
    store = Store(tmp_path, model=None)
    try:
        runs = {r["run"]: r for r in store.runs()}
        assert set(runs) == {s["run"] for s in summaries} and len(runs) == len(set(searchers))
        keys = {k for run in runs for k in store.run_keys(run)}
        assert store.count() == len(keys)  # the union of both runs' evaluations, each once
        assert all(r["finished"] is not None and r["items"] == 4 for r in runs.values())
        for run in runs:  # each run folder shows what the store kept
            table = pd.read_csv(tmp_path / run / "evaluations.csv")
            stored = store.get_many(store.run_keys(run))
            assert list(table.key) == list(dict.fromkeys(store.run_keys(run)))
            assert [stored[k].accuracy for k in table.key] == list(table.accuracy)
    finally:
        store.close()
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left behind
