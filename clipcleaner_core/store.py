"""The SQLite catalogue: what has been computed, review decisions, and background jobs.

One file, ``<cache>/catalogue.sqlite``, in WAL mode with a busy timeout. Every call opens its own
short-lived connection and commits before returning, so the catalogue is safe to use from several
threads (Streamlit sessions) and processes (CLI, job supervisors) at once, and a review decision
is on disk the moment ``record_decisions`` returns.

Review decisions are an append-only log grouped in batches; undo marks the latest batch undone
rather than deleting it, so the full history stays auditable.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.paths import cache_dir

DECISIONS = ("keep", "drop", "relabel")
BUSY_TIMEOUT_S = 30.0
JOB_FIELDS = ("kind", "name", "argv", "run_dir", "status", "pid", "pgid", "created", "started",
              "ended", "exit_code", "heartbeat", "error")
_JOB_ALIASES = {"returncode": "exit_code"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    fingerprint TEXT PRIMARY KEY, name TEXT, kind TEXT, spec TEXT, n INTEGER, k INTEGER,
    created REAL);
CREATE TABLE IF NOT EXISTS embeddings (
    key TEXT PRIMARY KEY, dataset_fp TEXT, model TEXT, pretrained TEXT, dim INTEGER, n INTEGER,
    path TEXT, created REAL);
CREATE TABLE IF NOT EXISTS selections (
    key TEXT PRIMARY KEY, embedding_key TEXT, config TEXT, path TEXT, created REAL);
CREATE TABLE IF NOT EXISTS decision_batches (
    batch_id TEXT PRIMARY KEY, dataset_fp TEXT NOT NULL, n INTEGER, created REAL,
    undone REAL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, dataset_fp TEXT NOT NULL, idx INTEGER NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('keep', 'drop', 'relabel')), final_label INTEGER,
    batch_id TEXT NOT NULL REFERENCES decision_batches(batch_id), time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_by_dataset ON decisions (dataset_fp, idx);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, name TEXT, argv TEXT, run_dir TEXT,
    status TEXT DEFAULT 'queued', pid INTEGER, pgid INTEGER, created REAL, started REAL,
    ended REAL, exit_code INTEGER, heartbeat REAL, error TEXT);
"""


class Catalogue:
    """SQLite catalogue at ``db_path`` (default ``<cache>/catalogue.sqlite``).

    The constructor only creates the file and tables; every method opens its own connection.
    """

    def __init__(self, db_path: str | os.PathLike | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else cache_dir() / "catalogue.sqlite"
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        with self._connect() as conn:
            cursor = conn.execute(sql, params)
            columns = [c[0] for c in cursor.description]
            return pd.DataFrame([tuple(r) for r in cursor.fetchall()], columns=columns)

    # ---- computed artifacts ----------------------------------------------------------------
    def register_dataset(self, dataset, *, fingerprint: str | None = None) -> str:
        """Record a :class:`~clipcleaner_core.data.dataset.Dataset`; returns the fingerprint used.

        ``fingerprint`` defaults to ``dataset.fingerprint()`` (labels included, the key of review
        decisions); embeddings pass ``dataset.content_fingerprint()``, the key they are listed by.
        """
        fingerprint = fingerprint or dataset.fingerprint()
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fingerprint, dataset.name, dataset.kind, dataset.spec, len(dataset),
                 dataset.num_classes, time.time()),
            )
        return fingerprint

    def register_embedding(self, key: str, *, dataset_fp: str, model: str, pretrained: str | None,
                           dim: int, n: int, path: str | os.PathLike) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, dataset_fp, model, pretrained, int(dim), int(n), str(path), time.time()),
            )

    def register_selection(self, key: str, *, embedding_key: str, config: dict,
                           path: str | os.PathLike) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?)",
                (key, embedding_key, json.dumps(config, sort_keys=True), str(path), time.time()),
            )

    def list_datasets(self) -> pd.DataFrame:
        return self._frame("SELECT * FROM datasets ORDER BY created")

    def list_embeddings(self, dataset_fp: str | None = None) -> pd.DataFrame:
        if dataset_fp is None:
            return self._frame("SELECT * FROM embeddings ORDER BY created")
        return self._frame("SELECT * FROM embeddings WHERE dataset_fp = ? ORDER BY created", (dataset_fp,))

    def list_selections(self, embedding_key: str | None = None) -> pd.DataFrame:
        if embedding_key is None:
            return self._frame("SELECT * FROM selections ORDER BY created")
        return self._frame("SELECT * FROM selections WHERE embedding_key = ? ORDER BY created",
                           (embedding_key,))

    # ---- review decisions ------------------------------------------------------------------
    def record_decisions(self, dataset_fp: str, rows: Iterable[tuple]) -> str:
        """Append one batch of review decisions and commit it; returns the batch id.

        ``rows`` are ``(index, decision, final_label)`` with decision in keep | drop | relabel;
        ``final_label`` is required for relabel and may be None otherwise.
        """
        checked = [_check_decision(row) for row in rows]
        batch_id = uuid.uuid4().hex
        now = time.time()
        with self._transaction() as conn:
            conn.execute("INSERT INTO decision_batches VALUES (?, ?, ?, ?, NULL)",
                         (batch_id, dataset_fp, len(checked), now))
            conn.executemany(
                "INSERT INTO decisions (dataset_fp, idx, decision, final_label, batch_id, time) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(dataset_fp, idx, decision, label, batch_id, now) for idx, decision, label in checked],
            )
        return batch_id

    def decisions(self, dataset_fp: str) -> pd.DataFrame:
        """Latest decision per sample index, undone batches excluded.

        Returns DataFrame(index, decision, final_label, batch_id, time) sorted by index;
        ``final_label`` is a nullable integer (missing for keep/drop without a label).
        """
        frame = self._frame(
            "SELECT d.idx AS \"index\", d.decision, d.final_label, d.batch_id, d.time "
            "FROM decisions d JOIN decision_batches b ON b.batch_id = d.batch_id "
            "WHERE d.dataset_fp = ? AND b.undone IS NULL AND d.id = ("
            "  SELECT MAX(d2.id) FROM decisions d2 JOIN decision_batches b2 "
            "  ON b2.batch_id = d2.batch_id WHERE d2.dataset_fp = d.dataset_fp "
            "  AND d2.idx = d.idx AND b2.undone IS NULL) ORDER BY d.idx",
            (dataset_fp,),
        )
        if frame.empty:
            frame = pd.DataFrame(columns=["index", "decision", "final_label", "batch_id", "time"])
        return frame.astype({"index": "int64", "decision": "object", "final_label": "Int64",
                             "batch_id": "object", "time": "float64"})

    def undo_last(self, dataset_fp: str) -> int:
        """Mark the latest not-yet-undone batch for ``dataset_fp`` undone; returns its row count."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT batch_id, n FROM decision_batches WHERE dataset_fp = ? AND undone IS NULL "
                "ORDER BY rowid DESC LIMIT 1", (dataset_fp,),
            ).fetchone()
            if row is None:
                return 0
            conn.execute("UPDATE decision_batches SET undone = ? WHERE batch_id = ?",
                         (time.time(), row["batch_id"]))
        return int(row["n"])

    # ---- jobs ------------------------------------------------------------------------------
    def add_job(self, kind: str, argv: list[str], run_dir: str | os.PathLike) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (kind, argv, run_dir, status, created) VALUES (?, ?, ?, 'queued', ?)",
                (kind, json.dumps([str(a) for a in argv]), str(run_dir), time.time()),
            )
            return int(cursor.lastrowid)

    def update_job(self, job_id: int, **fields) -> None:
        """Set job columns: status, pid, pgid, started, ended, exit_code (alias returncode),
        heartbeat, error, name, ..."""
        values = {_JOB_ALIASES.get(k, k): v for k, v in fields.items()}
        unknown = sorted(set(values) - set(JOB_FIELDS))
        if unknown:
            raise CLIPCleanerError(f"unknown job field(s) {unknown}; valid: {', '.join(JOB_FIELDS)}")
        if not values:
            return
        if "argv" in values:
            values["argv"] = json.dumps([str(a) for a in values["argv"]])
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self._transaction() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), int(job_id)))

    def get_job(self, job_id: int) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        return _job_dict(row) if row is not None else None

    def list_jobs(self, *, kind: str | None = None, status: str | None = None) -> list[dict]:
        """Jobs as dicts (argv decoded), oldest first, optionally filtered by kind / status."""
        clauses, params = [], []
        for column, value in (("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT * FROM jobs{where} ORDER BY id", tuple(params)).fetchall()
        return [_job_dict(row) for row in rows]


def _job_dict(row: sqlite3.Row) -> dict:
    job = dict(row)
    job["argv"] = json.loads(job["argv"]) if job.get("argv") else []
    job["returncode"] = job.get("exit_code")
    return job


def _check_decision(row: tuple) -> tuple[int, str, int | None]:
    try:
        index, decision, label = row
    except (TypeError, ValueError) as exc:
        raise CLIPCleanerError(f"a review decision must be (index, decision, label), got {row!r}") from exc
    if decision not in DECISIONS:
        raise CLIPCleanerError(
            f"unknown review decision {decision!r} for sample {index}; use one of {', '.join(DECISIONS)}"
        )
    if decision == "relabel" and label is None:
        raise CLIPCleanerError(f"relabelling sample {index} needs the new label")
    if int(index) < 0:
        raise CLIPCleanerError(f"sample index {index} is negative")
    return int(index), decision, None if label is None else int(label)
