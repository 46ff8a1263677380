"""The results store of a sweep: one SQLite file, ``<sweep dir>/sweep.db``.

One row per run (keyed by the run's hash): its labels, bindings, directory, status
(``pending``, ``running``, ``done``, ``diverged``, ``failed``, ``interrupted``), how many
times it was started, the step it resumed from, and the figures of its ``summary.json``.
Writers open a connection per operation, in WAL mode with a busy timeout, and write in
``BEGIN IMMEDIATE`` transactions, so several worker processes (or threads) may record
results at once while ``status`` reads. WAL needs a local file system (not NFS): on a
cluster, let the launcher (the Ray driver) be the only writer, as the Ray backend does.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

STATUSES = ("pending", "running", "done", "diverged", "failed", "interrupted")
FINISHED = ("done", "diverged")   # relaunching a sweep skips these
SUMMARY_COLUMNS = {
    "step": "INTEGER", "steps": "INTEGER", "final_train_loss": "REAL",
    "final_val_loss": "REAL", "tokens_seen": "INTEGER", "batch_tokens": "INTEGER",
    "train_flops": "REAL", "params_total": "INTEGER", "params_non_embedding": "INTEGER",
    "flops_per_token": "REAL", "optimizer": "TEXT", "lr": "REAL", "wall_time_s": "REAL",
    "diverged_step": "INTEGER",
}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  run_dir TEXT NOT NULL,
  labels TEXT NOT NULL,
  bindings TEXT NOT NULL,
  gin_files TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  resumed_from INTEGER,
  returncode INTEGER,
  error TEXT,
  worker TEXT,
  {", ".join(f"{k} {t}" for k, t in SUMMARY_COLUMNS.items())},
  summary TEXT,
  created_at REAL,
  started_at REAL,
  finished_at REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class Store:
    """The SQLite results store at ``path`` (created with its tables on first use)."""

    def __init__(self, path: str | Path, timeout_s: float = 120.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
        try:
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self):
        """A write transaction that holds the write lock from its start."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ writes
    def register(self, run_id: str, name: str, run_dir: str | Path, labels: dict,
                 bindings: dict, gin_files: list[str]) -> bool:
        """Adds a ``pending`` row unless the run is already there; True if added."""
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (run_id, name, run_dir, labels, bindings, gin_files,"
                " status, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (run_id, name, str(run_dir), json.dumps(labels), json.dumps(bindings),
                 json.dumps(gin_files), time.time()))
            return cur.rowcount == 1

    def start(self, run_id: str, resumed_from: int | None, worker: str | None = None) -> None:
        """Marks a run ``running`` and counts the attempt."""
        worker = worker or f"{socket.gethostname()}"
        with self._write() as db:
            cur = db.execute(
                "UPDATE runs SET status='running', attempts=attempts+1, resumed_from=?,"
                " worker=?, started_at=?, finished_at=NULL, error=NULL WHERE run_id=?",
                (resumed_from, worker, time.time(), run_id))
            _check_one(cur, run_id)

    def finish(self, run_id: str, status: str, summary: dict | None,
               returncode: int | None = None, error: str | None = None,
               worker: str | None = None) -> None:
        """Records a run's outcome and the figures of its ``summary.json`` (and where it
        ran, when only the backend knows it at the end: a Ray node)."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r}; valid: {STATUSES}")
        summary = summary or {}
        cols = {k: summary.get(k) for k in SUMMARY_COLUMNS}
        sets = ", ".join(f"{k}=?" for k in cols)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE runs SET status=?, returncode=?, error=?, summary=?, finished_at=?, "
                f"{sets} WHERE run_id=?",
                (status, returncode, error, json.dumps(summary) if summary else None,
                 time.time(), *cols.values(), run_id))
            _check_one(cur, run_id)
            if worker is not None:
                db.execute("UPDATE runs SET worker=? WHERE run_id=?", (worker, run_id))

    def set_meta(self, key: str, value: Any) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (key, json.dumps(value)))

    # ------------------------------------------------------------------ reads
    def meta(self, key: str, default: Any = None) -> Any:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def rows(self) -> list[dict]:
        """Every run as a dict (JSON columns decoded), in the order they were registered."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at, rowid").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("labels", "bindings", "gin_files", "summary"):
                d[k] = json.loads(d[k]) if d[k] else None
            out.append(d)
        return out

    def get(self, run_id: str) -> dict | None:
        return next((r for r in self.rows() if r["run_id"] == run_id), None)

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            got = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        return {s: got.get(s, 0) for s in STATUSES}

    def dataframe(self):
        """Rows as a pandas DataFrame: the columns of :meth:`rows` (``summary`` holds the
        run's ``summary.json`` dict) plus ``axis.<name>`` per axis label."""
        import pandas as pd

        rows = self.rows()
        flat = []
        for r in rows:
            d = dict(r)
            for axis, label in (r["labels"] or {}).items():
                d[f"axis.{axis}"] = label
            flat.append(d)
        return pd.DataFrame(flat)


def _check_one(cur: sqlite3.Cursor, run_id: str) -> None:
    if cur.rowcount != 1:
        raise KeyError(f"run {run_id!r} is not in the store; register it first")
