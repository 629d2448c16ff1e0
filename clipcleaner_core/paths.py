"""Where runtime data lives and which folders users may point the app at.

The app can be reached from a browser, so every path typed into it must lie under one of its *data
roots*, checked after symbolic links are resolved. The roots are, in order:

- the defaults: the home folder (unless it is the file-system root, as for some service accounts)
  and the cache's data area (``<cache>/uploads`` for uploaded datasets and ``<cache>/exports``, the
  default export folder). Never the working folder: started from ``/`` it would open every file;
- the folders in ``$CLIPCLEANER_DATA_ROOTS`` (``os.pathsep``-separated), which *extend* the defaults;
- folders added from the Dataset page, remembered in ``<cache>/data_roots.json``.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOTS_ENV = "CLIPCLEANER_DATA_ROOTS"
ADDED_ROOTS_FILE = "data_roots.json"


def cache_dir() -> Path:
    """Root of all cached artifacts: ``$CLIPCLEANER_CACHE`` or ``<project>/cache``."""
    root = Path(os.environ.get("CLIPCLEANER_CACHE", PROJECT_ROOT / "cache")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def uploads_dir() -> Path:
    """Where uploaded datasets are extracted (``<cache>/uploads``)."""
    return cache_dir() / "uploads"


def exports_dir() -> Path:
    """The default export folder (``<cache>/exports``): always allowed, created on demand."""
    folder = cache_dir() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class DataRoot:
    """One folder the app may read and write under, and why (``default``, the variable, ``added``)."""

    path: Path
    source: str


def _home() -> Path | None:
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no home folder known for this user
        return None
    if home == Path(home.anchor):
        log.warning("the home folder is %s, the file-system root: not used as a data root", home)
        return None
    return home


def _env_roots() -> list[Path]:
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return [Path(p.strip()).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def _added_file() -> Path:
    return cache_dir() / ADDED_ROOTS_FILE


def added_roots() -> list[Path]:
    """Folders added from the Dataset page (an unreadable or damaged list counts as empty)."""
    import json

    path = _added_file()
    if not path.exists():
        return []
    try:
        listed = json.loads(path.read_text(encoding="utf-8")).get("roots", [])
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring the list of added data roots %s: %s", path, exc)
        return []
    return [Path(str(p)) for p in listed if isinstance(p, str) and p]


def data_root_entries() -> list[DataRoot]:
    """Every data root in force, resolved and without duplicates, with where it comes from."""
    candidates: list[DataRoot] = []
    home = _home()
    if home is not None:
        candidates.append(DataRoot(home, "default (home folder)"))
    candidates += [DataRoot(uploads_dir(), "default (uploads)"), DataRoot(exports_dir(), "default (exports)")]
    candidates += [DataRoot(p, DATA_ROOTS_ENV) for p in _env_roots()]
    candidates += [DataRoot(p, "added on the Dataset page") for p in added_roots()]
    entries, seen = [], set()
    for entry in candidates:
        resolved = entry.path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            entries.append(DataRoot(resolved, entry.source))
    return entries


def data_roots() -> list[Path]:
    """Folders under which paths typed into the app must lie (resolved)."""
    return [entry.path for entry in data_root_entries()]


def add_data_root(path: str | os.PathLike) -> Path:
    """Remember ``path`` (an existing folder, not the file-system root) as a data root; returns it.

    Raises:
        ValueError: the folder does not exist, is not a folder, or is a file-system root.
    """
    from .atomic import write_json

    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not an existing folder; check the spelling")
    if folder == Path(folder.anchor):
        raise ValueError(f"{folder} is the file-system root, which would open every file on this "
                         "machine; add the folder that holds your data instead")
    listed = [str(p) for p in added_roots()]
    if str(folder) not in listed:
        write_json(_added_file(), {"roots": [*listed, str(folder)]})
        log.info("added data root %s", folder)
    return folder


def remove_data_root(path: str | os.PathLike) -> bool:
    """Forget an added data root; True when it was in the list."""
    from .atomic import write_json

    target = str(Path(path).resolve())
    listed = [str(p) for p in added_roots()]
    if target not in listed:
        return False
    write_json(_added_file(), {"roots": [p for p in listed if p != target]})
    return True


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` (symbolic links resolved) lies under ``root`` (resolved)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def within_roots(path: str | os.PathLike, roots: Iterable[Path] | None = None) -> bool:
    """True when ``path``, symbolic links resolved, lies under one of ``roots`` (default: all)."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(root) for root in (data_roots() if roots is None else roots))


def paths_outside_roots(files: Iterable[str | os.PathLike], roots: Iterable[Path] | None = None,
                        *, limit: int = 5) -> list[tuple[Path, Path]]:
    """(file, where it really is) for up to ``limit`` files that resolve outside every root.

    Each folder is resolved once and listed once to find its symbolic links, so a million files in
    a few hundred folders cost a few hundred directory listings, not a million ``realpath`` calls.
    """
    roots = [Path(r) for r in (data_roots() if roots is None else roots)]
    by_folder: dict[str, list[str]] = defaultdict(list)
    for file in files:
        folder, name = os.path.split(os.fspath(file))
        by_folder[folder].append(name)
    outside: list[tuple[Path, Path]] = []

    def inside(real: Path) -> bool:
        return any(real.is_relative_to(root) for root in roots)

    for folder, names in by_folder.items():
        real_folder = Path(os.path.realpath(folder))
        if not inside(real_folder):
            outside += [(Path(folder) / name, real_folder / name) for name in names[:limit - len(outside)]]
        else:
            try:
                links = {entry.name for entry in os.scandir(folder) if entry.is_symlink()}
            except OSError:  # an unreadable folder: its files are reported by the loader
                links = set()
            for name in names:
                if name in links:
                    real = Path(os.path.realpath(os.path.join(folder, name)))
                    if not inside(real):
                        outside.append((Path(folder) / name, real))
                if len(outside) >= limit:
                    break
        if len(outside) >= limit:
            break
    return outside
