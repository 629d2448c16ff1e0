"""Atomic writes, artifact sidecars and content hashes.

Every artifact is written to a temporary file in the destination folder, fsynced and moved into
place with ``os.replace``, so a crash never leaves a half-written file under the final name.

Temporary files are named and locked by :func:`clipcleaner_core.storage.create_locked_temp`. The
first write into a folder (and again at most every ``SWEEP_EVERY_S``) removes the temporary files
of writers that are gone (:func:`clipcleaner_core.storage.remove_stale_temps`).
A run killed with ``kill -9`` therefore leaves at most one temporary file, and the next run into
that folder removes it.

Metadata goes in a JSON sidecar named ``<file>.json``, written after the artifact and recording
the artifact's size. The pair is kept consistent at every instant:

1. replacing an artifact first removes its old sidecar (the old description no longer applies);
2. the new artifact is moved into place;
3. the new sidecar is written.

A kill between any two steps leaves an artifact without a sidecar, never one with a sidecar that
describes other bytes; :func:`read_sidecar` returns ``{}`` for an artifact whose sidecar is
missing, unreadable or of another size, and readers treat such an artifact as absent.

A write that runs out of space, or into a read-only folder, raises
:class:`~clipcleaner_core.storage.StorageError` naming the folder and (where known) the space
needed and free, instead of an ``OSError`` traceback. Callers that know how much they will write
pass ``size=`` (the free space is checked first) and ``preallocate=True`` (the file is reserved
on disk), so writing through a memory map can never die by SIGBUS.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from clipcleaner_core.storage import (NO_SPACE, StorageError, check_free_space, create_locked_temp, make_folder,
                                      no_space_error, remove_stale_temps, storage_error)

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
SIZE_KEY = "artifact_bytes"
NPY_HEADER_BYTES = 128
SWEEP_EVERY_S = 30.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DEFAULT_MODE = 0o666 & ~_umask()


_SWEPT: dict[Path, float] = {}
_SWEPT_LOCK = threading.Lock()


def _sweep_once(folder: Path) -> None:
    now = time.monotonic()
    with _SWEPT_LOCK:
        if now - _SWEPT.get(folder, -SWEEP_EVERY_S) < SWEEP_EVERY_S:
            return
        _SWEPT[folder] = now
    remove_stale_temps(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, size: int | None = None,
                preallocate: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. With ``size``
    (bytes the caller will write), the free space is checked first; with ``preallocate`` too,
    the file is given its full size on disk, so a full disk fails here with
    :class:`StorageError`, not later inside a memory map (open the file with ``"r+b"`` then:
    ``"wb"`` would truncate the reservation away).
    Running out of space (or into a read-only file system) while writing raises
    :class:`StorageError` too. Replacing a file removes its sidecar first (see the module doc).
    """
    final = Path(path)
    what = final.name
    make_folder(final.parent, what=what)
    _sweep_once(final.parent)
    if size is not None:
        check_free_space(final.parent, size, what=what)
    try:
        tmp, fd = create_locked_temp(final)
    except OSError as exc:
        raise (storage_error(exc, final.parent, what=what, target_only=True) or exc) from exc
    try:
        if size and preallocate:
            _preallocate(fd, size, final.parent, what)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # the temporary file is 0600; give the result the usual permissions (or keep the old ones)
        os.chmod(tmp, final.stat().st_mode & 0o777 if final.exists() else _DEFAULT_MODE)
        side = sidecar_path(final)
        if final.exists() and side.exists():
            side.unlink()  # the old description must not outlive the bytes it described
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except StorageError:
        raise
    except OSError as exc:
        error = storage_error(exc, final.parent, what=what, needed=size)
        if error is None:
            raise
        raise error from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        os.close(fd)


def _preallocate(fd: int, size: int, folder: Path, what: str) -> None:
    """Reserve ``size`` bytes for ``fd`` so later writes (even through a memmap) cannot fail."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise no_space_error(folder, what=what, needed=size) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    except AttributeError:  # no posix_fallocate on this platform: writes report ENOSPC instead
        pass


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path, size=len(data)) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` as a .npy file (memory-mappable with ``np.load(mmap_mode='r')``)."""
    array = np.ascontiguousarray(array)
    with atomic_path(path, size=array.nbytes + NPY_HEADER_BYTES) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    return Path(path)


# ---- sidecars ------------------------------------------------------------------------------
def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike, meta: dict) -> Path:
    """Write the JSON sidecar describing the artifact at ``path`` (call it after the artifact).

    The artifact's size (for a file) is recorded beside ``meta``, so a sidecar can never pass
    for the description of other bytes.
    """
    target = Path(path)
    record = dict(meta)
    if target.is_file():
        record[SIZE_KEY] = target.stat().st_size
    return write_json(sidecar_path(target), record)


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of the artifact at ``path``, or ``{}`` when the pair is not complete.

    ``{}`` means: no artifact, no sidecar, an unreadable sidecar, or one recorded for a file of
    another size. Readers treat the artifact as absent then (and may remove it with
    :func:`remove_artifact`).
    """
    target = Path(path)
    try:
        meta = json.loads(sidecar_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or not target.exists():
        return {}
    recorded = meta.pop(SIZE_KEY, None)
    if recorded is not None and target.is_file() and target.stat().st_size != recorded:
        log.warning("ignoring %s: its sidecar describes a file of %s bytes, not %s", target,
                    recorded, target.stat().st_size)
        return {}
    return meta


def remove_artifact(path: str | os.PathLike) -> None:
    """Remove an artifact and its sidecar: the sidecar first, so a kill leaves no false pair."""
    for victim in (sidecar_path(path), Path(path)):
        with contextlib.suppress(FileNotFoundError):
            victim.unlink()


# ---- hashes --------------------------------------------------------------------------------
def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays, paths and dataclasses."""
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def hash_json(obj: Any) -> str:
    """SHA-256 hex digest of ``obj`` serialised as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_array(array: np.ndarray) -> str:
    """SHA-256 hex digest of an array's dtype, shape and bytes."""
    arr = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()
