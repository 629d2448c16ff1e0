"""Where runtime data lives and which folders users may point the app at."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Root of all cached artifacts: ``$CLIPCLEANER_CACHE`` or ``<project>/cache``."""
    root = Path(os.environ.get("CLIPCLEANER_CACHE", PROJECT_ROOT / "cache")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_roots() -> list[Path]:
    """Folders under which paths typed into the app must lie.

    ``$CLIPCLEANER_DATA_ROOTS`` (os.pathsep-separated) or, by default, the home folder, the
    working folder and the cache.
    """
    raw = os.environ.get("CLIPCLEANER_DATA_ROOTS")
    if raw:
        roots = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    else:
        roots = [Path.home(), Path.cwd(), cache_dir()]
    return [r.resolve() for r in roots]


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True
