"""Where the Export page may write, and which existing files it may replace.

Rules (DESIGN §6 and the trust issue): an export goes to a folder the user chose for exports, under
the data roots (the default export folder is always allowed); its file name follows the format; an
existing file is replaced only when this app wrote it (it is in the ledger with the same size and
content hash) and the user confirmed; a file the app did not write (``~/.bashrc``) is never replaced.

The ledger and the last export folder are kept in ``<cache>/exports.json``, written atomically
under a file lock. Nothing here imports Streamlit; error messages name the page's controls.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from clipcleaner_core.atomic import sidecar_path, write_json
from clipcleaner_core.errors import DataError
from clipcleaner_core.paths import cache_dir, data_roots, exports_dir

FOLDER_CONTROL = "“Export folder”"
NAME_CONTROL = "“File name”"
LEDGER_FILE = "exports.json"


@dataclass(frozen=True)
class Target:
    """A checked export target. ``replaces`` is True when it overwrites this app's earlier export
    (which needs the user's confirmation)."""

    path: Path
    replaces: bool
    folder_format: bool


def suggested_name(dataset_name: str, fmt: str, extension: str | None) -> str:
    """``<dataset>-<format>.<extension>``, or ``<dataset>-clean`` for a folder format."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in dataset_name) or "dataset"
    return f"{stem}-{fmt}.{extension}" if extension else f"{stem}-clean"


def next_free_name(folder: Path, name: str) -> str:
    """``name`` or the first of ``stem-2.ext``, ``stem-3.ext``, ... that exists in neither form."""
    path = Path(name)
    stem, suffix = (path.stem, path.suffix) if path.suffix else (name, "")
    candidate, number = name, 1
    while (folder / candidate).exists() or sidecar_path(folder / candidate).exists():
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    return candidate


def check_target(folder_text: str, name_text: str, *, extension: str | None) -> Target:
    """Resolve and check an export target typed into the Export page.

    Args:
        folder_text: the “Export folder” field.
        name_text: the “File name” field (a name, not a path).
        extension: the format's file extension (``"csv"``), or None for a folder (ImageFolder).

    Raises:
        DataError: naming the control to fix: an empty field, a folder outside the data roots, a
            name with a folder part or the wrong extension, an existing file this app did not
            write.
    """
    folder_text, name = (folder_text or "").strip(), (name_text or "").strip()
    if not folder_text:
        raise DataError(f"Enter a folder in {FOLDER_CONTROL}.")
    folder = Path(folder_text).expanduser().resolve()
    roots = data_roots()
    if not any(folder.is_relative_to(root) for root in roots):
        listed = ", ".join(str(r) for r in roots)
        raise DataError(f"{FOLDER_CONTROL} {folder} is outside the folders this app may use ({listed}). "
                        f"Choose a folder under one of them (the default is {exports_dir()}), or add "
                        "its folder on the Dataset page.")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{FOLDER_CONTROL} {folder} is a file; give a folder.")
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise DataError(f"{NAME_CONTROL} must be a plain name such as "
                        f"{suggested_name('data', 'csv', extension) if extension else 'data-clean'}, "
                        f"without a folder (choose the folder in {FOLDER_CONTROL}).")
    if extension and Path(name).suffix.lower() != f".{extension}":
        raise DataError(f"{NAME_CONTROL} {name!r} does not end in .{extension}, the extension of the chosen "
                        f"format; use e.g. {Path(name).stem}.{extension}.")
    target = folder / name
    if target.is_symlink():
        raise DataError(f"{NAME_CONTROL}: {target} is a symbolic link; choose another name.")
    replaces = False
    for path in (target, sidecar_path(target)):
        if path.exists() or path.is_symlink():
            if not written_by_app(path):
                raise DataError(f"{NAME_CONTROL}: {path} already exists and was not written by this app, "
                                "so it is never replaced. Choose another file name or folder.")
            replaces = True
    if extension is None and target.is_dir() and not any(target.iterdir()):
        replaces = False  # an empty folder is simply filled
    return Target(target, replaces, extension is None)


def _ledger_path() -> Path:
    return cache_dir() / LEDGER_FILE


def _read_ledger() -> dict:
    try:
        data = json.loads(_ledger_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"folder": None, "written": {}}
    return data if isinstance(data, dict) and isinstance(data.get("written"), dict) else {"folder": None, "written": {}}


def _fingerprint(path: Path) -> dict:
    if path.is_dir():
        return {"kind": "folder"}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"kind": "file", "size": path.stat().st_size, "sha256": digest.hexdigest()}


def written_by_app(path: str | os.PathLike) -> bool:
    """True when ``path`` is an export this app wrote and nobody changed since (a folder: this app
    wrote it and its sidecar is still there)."""
    path = Path(path)
    entry = _read_ledger()["written"].get(str(path.absolute()))
    if entry is None or path.is_symlink():
        return False
    try:
        if entry.get("kind") == "folder":
            return path.is_dir() and sidecar_path(path).is_file()
        return path.is_file() and path.stat().st_size == entry.get("size") and \
            _fingerprint(path)["sha256"] == entry.get("sha256")
    except OSError:
        return False


def record_written(*paths: str | os.PathLike, folder: str | os.PathLike | None = None) -> None:
    """Remember ``paths`` as written by this app (and ``folder`` as the last export folder)."""
    with FileLock(str(_ledger_path()) + ".lock", timeout=30):
        ledger = _read_ledger()
        for path in map(Path, paths):
            if path.exists():
                ledger["written"][str(path.absolute())] = {**_fingerprint(path), "at": time.time()}
        if folder is not None:
            ledger["folder"] = str(folder)
        write_json(_ledger_path(), ledger)


def last_folder() -> Path:
    """The folder of the last export if it is still allowed, else the default export folder."""
    folder = _read_ledger().get("folder")
    if folder:
        path = Path(folder)
        if path.is_dir() and any(path.resolve().is_relative_to(r) for r in data_roots()):
            return path
    return exports_dir()
