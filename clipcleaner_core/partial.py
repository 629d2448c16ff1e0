"""Folders built aside and swapped into place, and the clean-up of those a killed writer left.

:class:`PartialFolder` builds ``out`` as the hidden sibling ``.<name>.<token>.partial`` and renames
it into place when done (an existing ``out`` is moved to ``.<name>.<token>.old`` for the swap, then
removed). Beside them it keeps ``.<name>.<token>.export-lock``: a JSON note naming both folders,
held with an exclusive ``flock`` for as long as the writer lives. The kernel drops that lock when
the writer dies, even by ``kill -9``, so :func:`remove_stale_partials` can tell a dead writer's
leftovers from a live one's, and only ever touches folders that a lock file of this app names: it
removes the partial folder, and puts the previous ``out`` back if the writer died in the middle of
the swap.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".export-lock"
APP = "clipcleaner"


class PartialFolder:
    """``with PartialFolder(out) as folder:`` fill ``folder``, then call :meth:`commit`.

    Leaving the block without :meth:`commit` (an error, a cancel) removes the partial folder.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        token = uuid.uuid4().hex[:12]
        stem = f".{self.out.name}.{token}"
        self.path = self.out.parent / f"{stem}.partial"
        self.old = self.out.parent / f"{stem}.old"
        self.lock_path = self.out.parent / f"{stem}{LOCK_SUFFIX}"
        self._lock_fd: int | None = None

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.out.parent)
        fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        note = {"app": APP, "out": self.out.name, "partial": self.path.name, "old": self.old.name,
                "pid": os.getpid()}
        os.write(fd, json.dumps(note).encode("utf-8"))
        os.fsync(fd)
        self.path.mkdir()
        return self.path

    def commit(self) -> None:
        """Rename the filled folder into place (the previous ``out``, if any, is replaced)."""
        if not self.out.exists():
            os.rename(self.path, self.out)
            return
        os.rename(self.out, self.old)
        try:
            os.rename(self.path, self.out)
        except OSError:
            os.rename(self.old, self.out)
            raise
        shutil.rmtree(self.old, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            try:
                self.lock_path.unlink(missing_ok=True)
            finally:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of dead writers in ``folder``; return the folders removed or restored.

    Only folders named by one of this app's lock files whose lock is free (its writer is gone) are
    touched; a partial folder without a lock file, or with a live writer, is left alone.
    """
    cleaned = []
    try:
        locks = sorted(p for p in Path(folder).iterdir() if p.name.endswith(LOCK_SUFFIX))
    except OSError:
        return cleaned
    for lock_path in locks:
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            note = _read_note(lock_path)
            if note is None:
                continue
            cleaned += _clean(Path(folder), note)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return cleaned


def _read_note(lock_path: Path) -> dict | None:
    try:
        note = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = [note.get(k) for k in ("out", "partial", "old")] if isinstance(note, dict) else [None]
    if note.get("app") != APP or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..")
                                         for n in names):
        return None
    return note


def _clean(folder: Path, note: dict) -> list[Path]:
    out, partial, old = folder / note["out"], folder / note["partial"], folder / note["old"]
    cleaned = []
    if old.is_dir() and not old.is_symlink():
        if not out.exists():  # died mid-swap: the previous export goes back in place
            os.rename(old, out)
            log.warning("restored %s, left aside by an export that was killed", out)
        else:
            shutil.rmtree(old, ignore_errors=True)
        cleaned.append(old)
    if partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial, ignore_errors=True)
        log.info("removed %s, left by an export that was killed", partial)
        cleaned.append(partial)
    return cleaned
