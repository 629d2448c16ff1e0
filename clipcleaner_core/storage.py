"""Where writes fail: free space, full and read-only disks, and temporary files of dead writers.

:class:`StorageError` is the one error for a write the disk refused; its message names the folder,
the space needed and free where known, and the fix. It is also an ``OSError`` with the original
``errno``, so code that tolerates failed writes keeps doing so.

Temporary files are named ``.<file>.<pid>.<token>.tmp`` and locked (``flock``) by their writer
while it works (:func:`create_locked_temp`). :func:`remove_stale_temps` removes those whose pid
is dead and whose lock is free, so a live writer on another machine sharing the folder is left
alone.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.procgroup import pid_alive

log = logging.getLogger(__name__)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: temporary files of older versions (``.<file>.<random>.tmp``: no pid, no lock) are removed
#: once they are this old (no write of this app takes that long to move its file into place)
LEGACY_TEMP_AGE_S = 3600.0
_READ_ONLY = (errno.EROFS,)
_ALMOST_FULL = 1 << 20
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.tmp$")
_LEGACY_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<token>[A-Za-z0-9_]{8})\.tmp$")


class StorageError(CLIPCleanerError, OSError):
    """A file could not be written: no space left, a read-only folder, or a failing disk.

    ``folder`` is where the write went; ``needed`` and ``free`` are byte counts when known. It is
    also an ``OSError`` (with the original ``errno``), so code that tolerates failed writes keeps
    doing so.
    """

    def __init__(self, message: str, *, folder: Path, needed: int | None = None,
                 free: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code
        self.folder = folder
        self.needed = needed
        self.free = free


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user in the file system holding ``folder`` (None if unknown)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_free_space(folder: str | os.PathLike, needed: int, *, what: str) -> None:
    """Raise :class:`StorageError` when ``folder`` has fewer than ``needed`` bytes free."""
    folder = Path(folder)
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise no_space_error(folder, what=what, needed=needed, free=free)


def no_space_error(folder: Path, *, what: str, needed: int | None = None,
                   free: int | None = None) -> StorageError:
    free = free_bytes(folder) if free is None else free
    amounts = []
    if needed is not None:
        amounts.append(f"needs {format_bytes(needed)}")
    if free is not None:
        amounts.append(f"{format_bytes(free)} free")
    detail = f" ({', '.join(amounts)})" if amounts else ""
    elsewhere = " (or point the cache elsewhere with CLIPCLEANER_CACHE)" if _in_cache(folder) else ""
    return StorageError(
        f"not enough disk space in {folder} to write {what}{detail}; free some space there{elsewhere} "
        "and run again: nothing was left half-written, and finished work is kept.",
        folder=folder, needed=needed, free=free, code=errno.ENOSPC)


def _cache_hint(folder: Path) -> str:
    return " (for the cache: set CLIPCLEANER_CACHE)" if _in_cache(folder) else ""


def _in_cache(folder: Path) -> bool:
    from clipcleaner_core.paths import cache_dir, is_within

    try:
        return is_within(folder, cache_dir())
    except OSError:
        return False


def storage_error(exc: OSError, folder: Path, *, what: str, needed: int | None = None,
                  target_only: bool = False) -> StorageError | None:
    """The :class:`StorageError` for a failed write, or None if ``exc`` is not about storage.

    With ``target_only`` (the failing call touched nothing but ``folder``), a permission error
    is one too.

    numpy's ``tofile`` reports a short write without an errno ("N requested and M written");
    that counts as a full disk when the folder has (almost) no space left.
    """
    free = free_bytes(folder)
    short_write = exc.errno is None and free is not None and free < _ALMOST_FULL
    if exc.errno in NO_SPACE or short_write:
        return no_space_error(folder, what=what, needed=needed)
    if exc.errno in _READ_ONLY:
        return StorageError(f"cannot write {what}: {folder} is on a read-only file system; choose a "
                            f"writable folder{_cache_hint(folder)}.", folder=folder,
                            code=exc.errno)
    if target_only and exc.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"cannot write {what}: no permission to write in {folder}; make it writable "
                            f"or choose another folder{_cache_hint(folder)}.", folder=folder,
                            code=exc.errno)
    if exc.errno == errno.EIO:
        return StorageError(f"input/output error while writing {what} in {folder}: the disk may be "
                            "failing or was disconnected; check it and run again.", folder=folder,
                            code=exc.errno)
    return None



# ---- temporary files -----------------------------------------------------------------------
def create_locked_temp(final: Path) -> tuple[Path, int]:
    """A new locked temporary file beside ``final``: (path, open descriptor holding the lock)."""
    while True:
        tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # a file system without locks: the pid still protects it
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return tmp, fd


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files this module left in ``folder`` whose writer is gone.

    A file qualifies when its name has this module's pattern, the pid in the name is not a live
    process and no process holds its lock (so a live writer on another machine sharing the
    folder is left alone). Returns the removed paths.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        match = _TEMP_RE.match(entry.name)
        if match is not None:
            if pid_alive(int(match["pid"])):
                continue
        elif _LEGACY_TEMP_RE.match(entry.name) is not None:
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime < LEGACY_TEMP_AGE_S:
                    continue
        else:
            continue
        if _unlink_if_unlocked(Path(entry.path)):
            removed.append(Path(entry.path))
    if removed:
        log.info("removed %d temporary file(s) left in %s by runs that ended early", len(removed), folder)
    return removed


def _unlink_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    try:
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the lock


def make_folder(folder: str | os.PathLike, *, what: str) -> Path:
    """``mkdir -p folder``; a full disk or an unwritable place is a :class:`StorageError`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (storage_error(exc, folder, what=what, target_only=True) or exc) from exc
    return folder
