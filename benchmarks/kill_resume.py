"""A run killed with SIGKILL at random moments, resumed each time, against the same run left alone.

The same ``paretobench run`` command (on the embedded default) runs twice in two fresh results
folders: once uninterrupted, once killed at ``--kills`` random moments (distinct numbers of
stored evaluations, drawn from a seeded generator) and started again after each kill, then run
to the end. Checks: the killed folder's store holds exactly the run's distinct evaluations (none
lost, none twice), the run's items are the same keys in the same order, and its evaluations
table equals the uninterrupted one (timings aside).

    python benchmarks/kill_resume.py [--kills 5] [--n 40] [--limit 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def stored(folder: Path) -> int:
    try:
        with sqlite3.connect(folder / "store.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    except sqlite3.Error:
        return 0


def command(args, out: Path) -> list[str]:
    return [sys.executable, "-m", "paretobench.cli", "run", "--searcher", args.searcher, "--pruner", args.pruner,
            "--n", str(args.n), "--limit", str(args.limit), "--chunk", str(args.chunk), "--out", str(out), "--json"]  # fmt: skip


def table(folder: Path):
    import pandas as pd

    t = pd.read_csv(folder / "evaluations.csv")
    return t.drop(columns=["seconds"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--searcher", default="random")
    p.add_argument("--pruner", default="fastv")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--limit", type=int, default=8, help="questions per family")
    p.add_argument("--chunk", type=int, default=2)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        clean, killed = Path(tmp) / "clean", Path(tmp) / "killed"
        t0 = time.perf_counter()
        subprocess.run(command(args, clean), check=True, capture_output=True)
        clean_seconds = time.perf_counter() - t0
        kills = []
        # the moments: distinct counts of stored evaluations, drawn at random, in order
        for target in sorted(rng.sample(range(1, args.n - 1), args.kills)):
            if stored(killed) >= target:
                continue  # the last start already got past this moment
            proc = subprocess.Popen(command(args, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while stored(killed) < target and proc.poll() is None:
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append({"aimed_at": target, "stored_when_killed": stored(killed)})
        resumed = subprocess.run(command(args, killed), check=True, capture_output=True, text=True)
        summary = json.loads(resumed.stdout)
        run = summary["run"]
        with sqlite3.connect(killed / "store.sqlite") as db:
            count = db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
            keys = [k for (k,) in db.execute("SELECT key FROM run_items WHERE run = ? ORDER BY seq", (run,))]
        with sqlite3.connect(clean / "store.sqlite") as db:
            clean_keys = [k for (k,) in db.execute("SELECT key FROM run_items WHERE run = ? ORDER BY seq", (run,))]
        result = {
            "run": run, "n": args.n, "kills": kills, "clean_seconds": clean_seconds,
            "stored": count, "distinct_keys": len(set(keys)),
            "nothing_lost_or_twice": count == len(set(keys)) == len(set(clean_keys)),
            "same_items_in_order": keys == clean_keys,
            "tables_identical": bool(table(killed / run).equals(table(clean / run))),
            "computed_after_last_kill": summary["computed"],
        }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{len(kills)} kills at {[k['stored_when_killed'] for k in kills]} stored evaluations; finally "
              f"{result['stored']} stored for {result['distinct_keys']} distinct keys; tables identical: "
              f"{result['tables_identical']}")  # fmt: skip
    ok = result["nothing_lost_or_twice"] and result["same_items_in_order"] and result["tables_identical"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
