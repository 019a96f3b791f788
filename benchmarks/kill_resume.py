"""Runs killed with SIGKILL at random moments, resumed each time, against the same runs left alone.

Three ``paretobench run`` commands on the embedded default share one results folder, as a
user's runs do: a random search (local runner), VisPCO (its predictor trained, then its
proposals evaluated) and a random search on the Ray runner (two workers). They run twice, into
two fresh folders: once uninterrupted, once killed at ``--kills`` moments in all (drawn from a
seeded generator) and started again after each kill, then run to the end. A moment is a number
of stored evaluations, or, for VisPCO, a point drawn in its training (timed on the
uninterrupted run; each kill records whether the predictor had been saved by then). After a
killed Ray run, the Ray processes it leaves behind (its agents outlive a killed driver) are
ended by their ids.

Checks: the killed folder's store holds exactly the runs' distinct evaluations (none lost, none
twice), each run's items are the uninterrupted run's keys in the same order, its evaluations
table equals the uninterrupted one (timings aside), and VisPCO's predictor is the same. Writes
``results/kill-resume.json``.

    python benchmarks/kill_resume.py [--kills 10] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "results" / "kill-resume.json"
# name -> (the command's own arguments, the share of the kills it gets)
RUNS = {
    "random": (["--searcher", "random", "--n", "16"], 0.3),
    "vispco": (["--searcher", "vispco", "--param", "steps=20", "--param", "train_limit=160", "--param", "probe=32"],
               0.4),
    "ray": (["--searcher", "random", "--n", "12", "--seed", "1", "--runner", "ray", "--workers", "2"], 0.3),
}  # fmt: skip


def command(run: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "paretobench.cli", "run", *RUNS[run][0], "--limit", "4", "--chunk", "2",
            "--threads", "1", "--out", str(out), "--json"]  # fmt: skip


def query(folder: Path, sql: str, *args) -> list[tuple]:
    try:
        with sqlite3.connect(folder / "store.sqlite", timeout=5) as db:
            return db.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def stored(folder: Path) -> int:
    return (query(folder, "SELECT COUNT(*) FROM evaluations") or [(0,)])[0][0]


def out_log(out: Path, run: str) -> Path:
    return out.with_name(f"{out.name}.{run}.log")


def start(run: str, out: Path) -> subprocess.Popen:
    """The command, its stderr appended to ``out_log`` (beside the results folder)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(out_log(out, run), "a") as log:
        return subprocess.Popen(command(run, out), env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)  # fmt: skip


def failed(run: str, out: Path, proc: subprocess.Popen) -> RuntimeError:
    tail = out_log(out, run).read_text().splitlines()[-15:]
    return RuntimeError(f"{' '.join(command(run, out))} exited with {proc.returncode}:\n" + "\n".join(tail))


def kill(proc: subprocess.Popen) -> int:
    """SIGKILL the command, then end what it left running (Ray's processes) by their ids."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = []
    for _ in range(20):  # Ray's raylet and workers follow their driver within a few seconds
        ps = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        left = [int(p) for p in ps.split()]
        if not left:
            break
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(left)


def finish(run: str, out: Path) -> dict:
    proc = start(run, out)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise failed(run, out, proc)
    return json.loads(stdout)


def clean_run(run: str, out: Path) -> dict:
    """The uninterrupted run, timing VisPCO's training as the moments it is killed at are drawn in."""
    t0 = time.perf_counter()
    proc = start(run, out)
    begun = trained = None
    while proc.poll() is None:
        if begun is None and query(out, "SELECT run FROM runs WHERE run LIKE ?", f"{RUNS[run][0][1]}-%"):
            begun = time.perf_counter() - t0
        if trained is None and list(out.glob("*/vispco-predictor.pt")):
            trained = time.perf_counter() - t0
        time.sleep(0.05)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise failed(run, out, proc)
    summary = json.loads(stdout)
    return {"summary": summary, "seconds": time.perf_counter() - t0, "begun": begun, "trained": trained}


def moments(rng: random.Random, run: str, clean: dict, kills: int) -> list[tuple[str, float]]:
    """``kills`` moments of one run, in order: ("stored", evaluations stored in the folder so
    far, this run's counted on top of the runs before it) or ("training", seconds after start)."""
    n = clean["summary"]["computed"]
    stored_kills = kills - (kills // 2 if run == "vispco" else 0)
    out = [("training", s) for s in sorted(rng.uniform(clean["begun"], clean["trained"])
                                           for _ in range(kills - stored_kills))]  # fmt: skip
    return out + [("stored", t) for t in sorted(rng.sample(range(1, n), stored_kills))]


def killed_runs(rng, cleans: dict, folder: Path, kills: int) -> tuple[list[dict], list[dict], dict]:
    """Each run killed at its moments, started again after each kill and, after its last, run to
    the end; the kills, the starts that failed on their own, and each run's summary from the
    last start."""
    shares = {run: max(1, round(kills * share)) for run, (_, share) in RUNS.items()}
    shares["ray"] = kills - shares["random"] - shares["vispco"]
    done, crashed, resumed = [], [], {}
    for run in RUNS:
        base = stored(folder)  # the evaluations of the runs before this one
        for phase, at in moments(rng, run, cleans[run], shares[run]):
            t0 = time.perf_counter()
            target = max(base + at, stored(folder) + 1) if phase == "stored" else None  # a moment past: the next
            proc = start(run, folder)
            reached = (lambda: time.perf_counter() - t0 >= at) if target is None else (lambda: stored(folder) >= target)
            while proc.poll() is None and not reached():
                time.sleep(0.01)
            if proc.poll() is not None:  # it ended first: the moment was never reached
                if proc.returncode:
                    tail = out_log(folder, run).read_text().strip().splitlines()[-1:]
                    crashed.append({"run": run, "phase": phase, "aimed_at": at, "exit": proc.returncode,
                                    "error": tail[0] if tail else ""})  # fmt: skip
                continue
            left = kill(proc)
            done.append({"run": run, "phase": phase, "aimed_at": round(at, 2) if phase == "training" else at,
                         "seconds_after_start": round(time.perf_counter() - t0, 2),
                         "stored_when_killed": stored(folder) - base, "processes_left_behind": left,
                         **({"predictor_saved": any(folder.glob("vispco-*/vispco-predictor.pt"))}
                            if run == "vispco" else {})})  # fmt: skip
        resumed[run] = finish(run, folder)
    return done, crashed, resumed


def table(folder: Path):
    import pandas as pd

    return pd.read_csv(folder / "evaluations.csv").drop(columns=["seconds"])


def predictor(path: Path):
    import torch

    return torch.load(path, weights_only=True)["state_dict"]


def compare(cleans: dict, resumed: dict, clean: Path, killed: Path) -> dict:
    import torch

    runs = {}
    for run in RUNS:
        name = resumed[run]["run"]
        keys = [k for (k,) in query(killed, "SELECT key FROM run_items WHERE run = ? ORDER BY seq", name)]
        clean_keys = [k for (k,) in query(clean, "SELECT key FROM run_items WHERE run = ? ORDER BY seq", name)]
        have = {k for (k,) in query(killed, "SELECT key FROM evaluations")}
        runs[run] = {"run": name, "items": len(keys), "lost": len(set(clean_keys) - have),
                     "duplicated": len(keys) - len(clean_keys), "same_items_in_order": keys == clean_keys,
                     "table_identical": bool(table(killed / name).equals(table(clean / name))),
                     "computed_after_last_kill": resumed[run]["computed"]}  # fmt: skip
        if run == "vispco":
            a, b = (predictor(f / name / "vispco-predictor.pt") for f in (clean, killed))
            runs[run]["predictor_identical"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    every = {k for (k,) in query(killed, "SELECT key FROM run_items")}
    return {"runs": runs, "stored": stored(killed), "distinct_keys_of_runs": len(every),
            "stored_in_clean": stored(clean)}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.kills < len(RUNS) + 1:
        raise SystemExit(f"--kills must be >= {len(RUNS) + 1} (one per run, two for VisPCO)")
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clean, killed = Path(tmp) / "clean", Path(tmp) / "killed"
        cleans = {run: clean_run(run, clean) for run in RUNS}
        kills, crashed, resumed = killed_runs(rng, cleans, killed, args.kills)
        checked = compare(cleans, resumed, clean, killed)
    runs = checked["runs"].values()
    identical = all(r["table_identical"] and r["same_items_in_order"] for r in runs) and all(
        r.get("predictor_identical", True) for r in runs)  # fmt: skip
    result = {
        "seed": args.seed, "kills": kills, "killed": len(kills), "crashed": crashed,
        "lost": sum(r["lost"] for r in runs), "duplicated": sum(r["duplicated"] for r in runs),
        "identical": identical, **checked,
        "nothing_lost_or_twice": checked["stored"] == checked["distinct_keys_of_runs"] == checked["stored_in_clean"],
        "clean_seconds": {run: round(c["seconds"], 1) for run, c in cleans.items()},
        "vispco_training_window_s": [round(cleans["vispco"]["begun"], 1), round(cleans["vispco"]["trained"], 1)],
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        phases = ", ".join(f"{k['run']}/{k['phase']}" for k in kills)
        print(f"{len(kills)} kills ({phases}); {result['stored']} stored for {result['distinct_keys_of_runs']} "
              f"distinct keys; lost {result['lost']}, duplicated {result['duplicated']}; "
              f"identical: {identical}")  # fmt: skip
    ok = result["nothing_lost_or_twice"] and identical and result["lost"] == result["duplicated"] == 0 and not crashed
    return 0 if ok and len(kills) == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
