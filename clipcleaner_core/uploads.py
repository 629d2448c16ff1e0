"""Files uploaded through the app, stored safely under ``<cache>/uploads/<hash>/``.

An upload is either a zip archive (an ImageFolder tree, or a manifest with its images) or a
manifest file (CSV / Parquet). Archives are checked before anything is written: every entry must
stay inside the target folder (no absolute paths, no ``..``, no links), and the total uncompressed
size and the number of entries are capped, so a zip bomb is refused rather than filling the disk.
Extraction happens in a temporary folder that is renamed into place only when complete, so a
failed upload never leaves a half-extracted dataset behind.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .atomic import write_bytes
from .data.manifest import MANIFEST_SUFFIXES
from .data.sources import SKIP_DIRS
from .errors import DataError
from .paths import cache_dir, is_within

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 1024 * 1024**2
"""Largest upload accepted, in bytes (keep in step with ``server.maxUploadSize`` in config.toml)."""

MAX_UNCOMPRESSED_BYTES = 4 * 1024**3
"""Largest total uncompressed size of an archive's contents."""

MAX_ENTRIES = 200_000
"""Most entries an archive may hold."""

_CHUNK = 1024 * 1024


def upload_folder(data: bytes, *, cache_root: str | os.PathLike | None = None) -> Path:
    """``<cache>/uploads/<first 16 hex chars of sha256(data)>``: the same bytes land in one place."""
    root = Path(cache_root) if cache_root is not None else cache_dir()
    return root / "uploads" / hashlib.sha256(data).hexdigest()[:16]


def save_upload(
    data: bytes,
    filename: str,
    *,
    cache_root: str | os.PathLike | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_uncompressed: int = MAX_UNCOMPRESSED_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> Path:
    """Store an uploaded zip or manifest and return the path to load it from.

    Parameters
    ----------
    data
        the uploaded bytes.
    filename
        the name the browser sent (only its suffix is used; ``.zip``, ``.csv``,
        ``.parquet``).
    cache_root
        cache folder (default :func:`clipcleaner_core.paths.cache_dir`).
    max_bytes
        largest accepted upload.
    max_uncompressed
        largest accepted total uncompressed archive size.
    max_entries
        most entries an archive may hold.

    Returns
    -------
    For a zip, the extracted folder (its single top-level folder when there is exactly one),
    or the manifest inside it when that folder holds exactly one; for a manifest, the saved
    file.

    Raises
    ------
    DataError
        the upload is too large, not a zip / manifest, or the archive is unsafe
        (entries escaping the folder, links, too large when uncompressed, too many entries).
    """
    name = PurePosixPath(str(filename).replace("\\", "/")).name or "upload"
    if len(data) > max_bytes:
        raise DataError(
            f"upload {name!r} is {len(data) / 1024**2:.0f} MB, over the {max_bytes / 1024**2:.0f} MB "
            "limit. Put the dataset in a folder under the app's data roots and enter its path instead, "
            "or raise server.maxUploadSize in .streamlit/config.toml."
        )
    suffix = PurePosixPath(name).suffix.lower()
    folder = upload_folder(data, cache_root=cache_root)
    if suffix == ".zip":
        if not folder.exists():
            _extract_zip(data, folder, name=name, max_uncompressed=max_uncompressed,
                         max_entries=max_entries)
        return _dataset_root(folder)
    if suffix in MANIFEST_SUFFIXES:
        target = folder / _safe_file_name(name)
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            write_bytes(target, data)
        return target
    raise DataError(
        f"upload {name!r}: expected a .zip archive of images or a manifest "
        f"({', '.join(MANIFEST_SUFFIXES)}); got {suffix or 'no suffix'}"
    )


def check_zip(
    archive: zipfile.ZipFile,
    *,
    name: str = "archive",
    max_uncompressed: int = MAX_UNCOMPRESSED_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> list[zipfile.ZipInfo]:
    """The archive's file entries, after refusing anything unsafe (see module docstring)."""
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise DataError(f"{name}: {len(infos)} entries, over the limit of {max_entries}; "
                        "split the archive or enter a folder path instead")
    total = 0
    files = []
    for info in infos:
        _check_entry_name(info.filename, name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DataError(f"{name}: entry {info.filename!r} is a symbolic link; links are not "
                            "accepted in uploads, archive the files themselves")
        if info.is_dir():
            continue
        total += info.file_size
        if total > max_uncompressed:
            raise DataError(
                f"{name}: contents exceed {max_uncompressed / 1024**3:.1f} GB uncompressed "
                "(possible zip bomb); enter a folder path instead of uploading"
            )
        files.append(info)
    return files


def _check_entry_name(entry: str, name: str) -> None:
    posix = entry.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if (posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in parts
            or "\x00" in posix):
        raise DataError(f"{name}: entry {entry!r} would be written outside the upload folder; "
                        "the archive is refused")


def _extract_zip(data: bytes, folder: Path, *, name: str, max_uncompressed: int,
                 max_entries: int) -> None:
    import io

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError(f"{name}: not a valid zip archive; re-create it and upload again") from None
    with archive:
        files = check_zip(archive, name=name, max_uncompressed=max_uncompressed,
                          max_entries=max_entries)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            budget = max_uncompressed
            for info in files:
                if _skipped(info.filename):
                    continue
                budget = _extract_entry(archive, info, staging, budget, name)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("extracted %d files of %s into %s", len(files), name, folder)


def _extract_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path,
                   budget: int, name: str) -> int:
    """Copy one entry, counting real bytes (headers can lie); returns the remaining budget."""
    target = (staging / info.filename.replace("\\", "/")).resolve()
    if not is_within(target, staging):
        raise DataError(f"{name}: entry {info.filename!r} escapes the upload folder; refused")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with archive.open(info) as source, open(target, "wb") as sink:
            while chunk := source.read(_CHUNK):
                budget -= len(chunk)
                if budget < 0:
                    raise DataError(f"{name}: contents grow past the uncompressed size limit while "
                                    "extracting (possible zip bomb); the archive is refused")
                sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as exc:
        raise DataError(f"{name}: entry {info.filename!r} cannot be extracted ({exc}); "
                        "re-create the archive") from None
    return budget


def _skipped(entry: str) -> bool:
    parts = PurePosixPath(entry.replace("\\", "/")).parts
    return any(p in SKIP_DIRS or p.startswith("._") or p == ".DS_Store" for p in parts)


def _dataset_root(folder: Path) -> Path:
    """What to load from an extracted archive.

    The folder itself, or its only child folder when the archive wrapped everything in one; and
    when that folder holds exactly one manifest at its top level, the manifest.
    """
    children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        folder = children[0]
    manifests = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES]
    return manifests[0] if len(manifests) == 1 else folder


def _safe_file_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).lstrip(".")
    return cleaned or "manifest.csv"
