"""The SQLite catalogue: what has been computed, review decisions, and background jobs.

One file, ``<cache>/catalogue.sqlite``, in WAL mode with a busy timeout. Every call opens its own
short-lived connection and commits before returning, so the catalogue is safe to use from several
threads (Streamlit sessions) and processes (CLI, job supervisors) at once, and a review decision
is on disk the moment ``record_decisions`` returns.

Review decisions are an append-only log grouped in batches; undo marks the latest batch undone
rather than deleting it, so the full history stays auditable.

Failures (a full disk, a read-only folder, a disk I/O error, a lock held too long, a damaged
file) raise :class:`CatalogueError`, one message naming the file and the fix. Each write is one
transaction: a failed one changes nothing, and everything committed before it stays saved.
When the file cannot be written, reads still work (the catalogue is opened read-only).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from clipcleaner_core.storage import format_bytes, free_bytes
from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.paths import cache_dir
from clipcleaner_core.schema import DECISIONS

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
JOB_FIELDS = ("kind", "name", "argv", "run_dir", "status", "pid", "pgid", "created", "started",
              "ended", "exit_code", "heartbeat", "error")
_JOB_ALIASES = {"returncode": "exit_code"}
_NEARLY_FULL = 1 << 20
_TABLES = ("datasets", "embeddings", "selections", "decision_batches", "decisions", "jobs")

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


class CatalogueError(CLIPCleanerError, sqlite3.OperationalError):
    """The catalogue file could not be read or written; the message names the file and the fix.

    ``kind`` is one of "full", "read-only", "io", "locked", "damaged", "other". It is also a
    ``sqlite3.OperationalError``, so callers that treat the catalogue as optional keep working.
    """

    def __init__(self, message: str, *, kind: str, path: Path) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path


class Catalogue:
    """SQLite catalogue at ``db_path`` (default ``<cache>/catalogue.sqlite``).

    The constructor only creates the file and tables; every method opens its own connection.
    ``read_only`` is True when the file exists but cannot be written (reads still work).
    """

    def __init__(self, db_path: str | os.PathLike | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else cache_dir() / "catalogue.sqlite"
        self.read_only = False
        with _translated(self.db_path, "open"):
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            if self.db_path.exists() and self._has_schema():
                return
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)

    def _has_schema(self) -> bool:
        """True when every table exists; notes (``read_only``) a file that cannot be written."""
        with self._connect(for_reading=True) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not set(_TABLES) <= names:
            return False
        self.read_only = self.read_only or not (os.access(self.db_path, os.W_OK)
                                                and os.access(self.db_path.parent, os.W_OK))
        return True

    @contextlib.contextmanager
    def _connect(self, *, for_reading: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; for reading, a read-only one when the file or its folder cannot be
        written (a read-only mount, a full disk that stops SQLite creating its -shm file)."""
        try:
            conn = self._open(read_only=False)
        except sqlite3.Error as exc:
            if not for_reading:
                raise
            (log.debug if self.read_only else log.warning)(
                "opening the catalogue %s read-only: %s", self.db_path, exc)
            conn = self._open(read_only=True)
            self.read_only = True
        else:
            if for_reading:
                self.read_only = False
        try:
            yield conn
        finally:
            conn.close()

    def _open(self, *, read_only: bool) -> sqlite3.Connection:
        if read_only:
            uri = self.db_path.resolve().as_uri()
            try:
                return self._open_uri(f"{uri}?mode=ro")
            except sqlite3.Error as exc:
                # a WAL database needs to write its -shm index even to read; "immutable" reads
                # the main file alone, which holds everything up to the last checkpoint
                log.debug("reading the catalogue %s as an immutable file: %s", self.db_path, exc)
                return self._open_uri(f"{uri}?immutable=1")
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        return self._prepare(conn, writable=True)

    def _open_uri(self, uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        return self._prepare(conn, writable=False)

    @staticmethod
    def _prepare(conn: sqlite3.Connection, *, writable: bool) -> sqlite3.Connection:
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if writable:
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # fail here, not later
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self, action: str = "save") -> Iterator[sqlite3.Connection]:
        with _translated(self.db_path, action, writing=True), self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            # copy the commit into the main file too, so read-only fallbacks see it
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _frame(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        with _translated(self.db_path, "read"), self._connect(for_reading=True) as conn:
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
        with self._transaction(f"save {len(checked)} review decision(s) (this batch was not saved)") as conn:
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
        with _translated(self.db_path, "read"), self._connect(for_reading=True) as conn:
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
        with _translated(self.db_path, "read"), self._connect(for_reading=True) as conn:
            rows = conn.execute(f"SELECT * FROM jobs{where} ORDER BY id", tuple(params)).fetchall()
        return [_job_dict(row) for row in rows]


@contextlib.contextmanager
def _translated(path: Path, action: str, *, writing: bool = False) -> Iterator[None]:
    """Turn a ``sqlite3.Error`` (or a failing folder) into one :class:`CatalogueError`."""
    try:
        yield
    except CatalogueError:
        raise
    except (sqlite3.Error, OSError) as exc:
        kind, fix = _diagnose(exc, path)
        kept = " Everything saved before is kept." if writing else ""
        raise CatalogueError(f"could not {action} in the catalogue {path}: {exc}. {fix}{kept}",
                             kind=kind, path=path) from exc


def _diagnose(exc: BaseException, path: Path) -> tuple[str, str]:
    """(kind, what to do) for a failed catalogue operation."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    errno_ = getattr(exc, "errno", None)
    free = free_bytes(path.parent)
    free_text = "" if free is None else f" ({format_bytes(free)} free now)"
    nearly_full = free is not None and free < _NEARLY_FULL  # SQLite reports ENOSPC as an I/O error
    if name.startswith("SQLITE_FULL") or "disk is full" in text or errno_ == 28 or (
            nearly_full and (name.startswith("SQLITE_IOERR") or "disk i/o" in text)):
        return "full", f"The disk holding {path.parent} is full{free_text}: free some space and try again."
    if (name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text
            or errno_ in (13, 30) or _read_only_folder(path.parent)):
        return "read-only", (f"{path} or its folder cannot be written: make them writable, or set "
                             "CLIPCLEANER_CACHE to a writable folder. Reading still works.")
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return "locked", (f"Another process (a second app, a CLI command or a job) kept it locked for "
                          f"over {BUSY_TIMEOUT_S:.0f} s: wait for it to finish or stop it, then try again.")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "damaged", (f"The file is damaged: move it aside (e.g. rename it to {path.name}.broken); a "
                           "new one is created on the next start. Cached embeddings and fits stay valid; "
                           "review decisions and job history can be salvaged from the old file with "
                           "`sqlite3 <old file> .recover`.")
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk i/o" in text or "unable to open" in text:
        return "io", (f"The disk reported an error{free_text}: check that it is not full, failing, or a "
                      "network folder that went away (keep the cache on a local disk), then try again.")
    return "other", "Check the file and its folder, then try again."


def _read_only_folder(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


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
