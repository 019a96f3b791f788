"""The results store: one SQLite database (WAL) per results folder, for one model.

Every evaluation is kept under a content key (see ``evaluation_key``): the model's and the
data's fingerprints, the pruner and its parameters, the schedule and the scoring version. A
key is written once, in its own transaction, the moment its evaluation finishes, so a killed
run loses at most the evaluations still running, and a re-run finds every finished one.

Runs are kept as ordered lists of keys (``run_items``): the schedules a searcher asked for, in
the order it asked. Per-sample correctness is kept with each evaluation, and each dataset's
per-sample categories once, so confidence intervals can be computed later without the model.

Several processes may write one store at once (two ``paretobench run`` commands with one
``--out``): every read-then-write (the model check on opening, ``begin_run``, ``add_items``)
runs in one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock before it reads,
so no two writers both see "missing" and both insert; a key evaluated by both is kept once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from paretobench.evaluation import Evaluation

SCHEMA_VERSION = 1
DB_NAME = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    data TEXT PRIMARY KEY, name TEXT NOT NULL, categories TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, data TEXT NOT NULL, pruner TEXT NOT NULL, schedule TEXT NOT NULL,
    flops REAL NOT NULL, unpruned_flops REAL NOT NULL, flops_fraction REAL NOT NULL,
    accuracy REAL NOT NULL, overall REAL NOT NULL, per_category TEXT NOT NULL,
    correct TEXT NOT NULL, live_visual TEXT NOT NULL, seconds REAL NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS run_items (
    run TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (run, seq));
"""


class StoreError(ValueError):
    """The results folder cannot be used as asked (corrupt, another model, a newer schema)."""


_COLUMNS = ("key", "data", "pruner", "schedule", "flops", "unpruned_flops", "flops_fraction", "accuracy",
            "overall", "per_category", "correct", "live_visual", "seconds", "created")  # fmt: skip


def _row(ev: Evaluation) -> tuple:
    d = asdict(ev)
    for k in ("pruner", "schedule", "per_category", "live_visual"):
        d[k] = json.dumps(d[k])
    d["correct"] = "".join("1" if c else "0" for c in ev.correct)
    return tuple(d[k] for k in _COLUMNS)


def _from_row(row: sqlite3.Row) -> Evaluation:
    d = dict(row)
    for k in ("pruner", "schedule", "per_category", "live_visual"):
        d[k] = json.loads(d[k])
    d["correct"] = [c == "1" for c in d["correct"]]
    return Evaluation(**d)


class Store:
    """``Store(folder, model=fingerprint)``: opens (or creates) ``folder/store.sqlite``.

    A folder belongs to one model: opening it for another model is an error, as is a file that
    is not a readable store. Nothing is ever deleted or overwritten by opening. ``model=None``
    opens an existing store for reading whatever model it holds.
    """

    def __init__(self, folder: str | Path, *, model: str | None, model_name: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"results folder {self.folder} is a file, not a folder")
        if model is None and not self.path.is_file():
            raise StoreError(f"{self.folder} holds no paretobench results ({DB_NAME} is missing)")
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path} ({e})") from None
        try:
            self._open(model, model_name)
        except BaseException:
            self.db.close()
            raise

    def _open(self, model: str | None, model_name: str) -> None:
        self.db.row_factory = sqlite3.Row
        try:
            # no PRAGMA quick_check on open: on a store of 100k evaluations (2000 questions, 32 layers
            # each; 419 MB) it took 0.70 s, then 0.24 s with the file cached, against 0.5 ms for the
            # open without it, and it grows with the store; a file that is not a store fails below
            self._wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            with self._tx():  # created, checked and claimed for the model by one writer at a time
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self.db.execute(statement)
                self._claim(model, model_name)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise StoreError(f"{self.path} stayed locked by another writer for 30 s; try again") from None
            raise StoreError(f"{self.path} is not a readable paretobench store ({e}); "
                             "it was left as it is: move it away or give another --out") from None  # fmt: skip

    def _wal(self, patience: float = 30.0) -> None:
        """Switch to WAL. Two processes opening a new file at once race to convert it, and the
        loser is told "database is locked" at once, without SQLite's busy wait: it tries again."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _claim(self, model: str | None, model_name: str) -> None:
        meta = self.meta()
        if int(meta.get("schema", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer paretobench (schema {meta['schema']})")
        if model is None:
            return
        if "model" in meta and meta["model"] != model:
            raise StoreError(f"results folder {self.folder} holds results of another model "
                             f"({meta.get('model_name') or meta['model'][:12]}); give another --out")  # fmt: skip
        if "model" not in meta:
            rows = [("schema", str(SCHEMA_VERSION)), ("model", model), ("model_name", model_name)]
            self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", rows)

    def close(self) -> None:
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------ datasets
    def put_dataset(self, data: str, name: str, categories: list[str]) -> None:
        with self._tx():
            self.db.execute("INSERT OR IGNORE INTO datasets VALUES (?, ?, ?)", (data, name, json.dumps(categories)))

    def dataset(self, data: str) -> tuple[str, list[str]]:
        row = self.db.execute("SELECT name, categories FROM datasets WHERE data = ?", (data,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no dataset {data[:12]}")
        return row["name"], json.loads(row["categories"])

    # ------------------------------------------------------------------ evaluations
    def put(self, ev: Evaluation) -> None:
        """Keep one finished evaluation (a key already there is left as it is)."""
        with self._tx():
            self.db.execute(f"INSERT OR IGNORE INTO evaluations VALUES ({', '.join('?' * len(_COLUMNS))})", _row(ev))

    def get_many(self, keys) -> dict[str, Evaluation]:
        keys, out = list(dict.fromkeys(keys)), {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT * FROM evaluations WHERE key IN ({', '.join('?' * len(chunk))})"
            out.update((r["key"], _from_row(r)) for r in self.db.execute(q, chunk))
        return out

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]

    # ------------------------------------------------------------------ runs
    def begin_run(self, run: str, config: dict) -> None:
        """Record a run (or find it again: the same name must carry the same config)."""
        with self._tx():
            row = self.db.execute("SELECT config FROM runs WHERE run = ?", (run,)).fetchone()
            if row is None:
                self.db.execute("INSERT INTO runs VALUES (?, ?, ?, NULL)", (run, json.dumps(config), time.time()))
                return
        old = json.loads(row["config"])
        if old != config:
            differ = ", ".join(f"{k} {old.get(k, '(none)')} -> {config.get(k, '(none)')}"
                               for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k))  # fmt: skip
            raise StoreError(f"run {run!r} already exists in {self.folder} with another configuration "
                             f"({differ}); give another --name or --out")  # fmt: skip

    def add_items(self, run: str, start: int, keys: list[str]) -> None:
        """Keys ``start, start+1, ...`` of the run's ordered list (re-adding the same is a no-op)."""
        with self._tx():
            for seq, key in enumerate(keys, start):
                old = self.db.execute("SELECT key FROM run_items WHERE run = ? AND seq = ?", (run, seq)).fetchone()
                if old is not None and old["key"] != key:
                    raise StoreError(f"run {run!r} asked for a different schedule at step {seq} than when it "
                                     "first ran; the searcher is not deterministic, give another --name")  # fmt: skip
                self.db.execute("INSERT OR IGNORE INTO run_items VALUES (?, ?, ?)", (run, seq, key))

    def finish_run(self, run: str) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished = ? WHERE run = ?", (time.time(), run))

    def forget_runs(self, runs: list[str]) -> None:
        """Remove runs' records and their item lists, all or none; their evaluations stay (they
        are found by key, so a rerun reuses them)."""
        known = {r["run"] for r in self.db.execute("SELECT run FROM runs")}
        missing = [r for r in runs if r not in known]
        if missing:
            raise StoreError(f"no run {', '.join(missing)} in {self.folder}")
        with self._tx():
            for run in runs:
                self.db.execute("DELETE FROM run_items WHERE run = ?", (run,))
                self.db.execute("DELETE FROM runs WHERE run = ?", (run,))

    def run_keys(self, run: str) -> list[str]:
        return [r["key"] for r in self.db.execute("SELECT key FROM run_items WHERE run = ? ORDER BY seq", (run,))]

    def runs(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT r.run, r.config, r.created, r.finished, COUNT(i.key) AS items, COUNT(DISTINCT i.key) AS distinct_keys "
            "FROM runs r LEFT JOIN run_items i ON i.run = r.run GROUP BY r.run ORDER BY r.created"
        )
        return [{**dict(r), "config": json.loads(r["config"])} for r in rows]


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
