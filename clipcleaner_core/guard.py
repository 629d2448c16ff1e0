"""No command writes over its own inputs, nor over a dataset's own files.

:func:`refuse_overwriting_inputs` compares every file a command is about to write (the output and
its JSON sidecar) with every file it reads, after resolving symbolic links and recognising hard
links (the same device and inode), so ``run --data m.csv --out m.csv`` — or ``--out`` a link to
``m.csv`` — stops before anything is written. :func:`refuse_inside_dataset_folder` keeps a folder
a command fills (a training run) out of a dataset's folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from .atomic import sidecar_path
from .errors import DataError
from .paths import is_within


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: equal after resolving links, or hard links."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): only the resolved names can tell
        return False


def refuse_overwriting_inputs(outputs: Mapping[str, str | os.PathLike],
                              inputs: Mapping[str, str | os.PathLike | Iterable | None]) -> None:
    """Raise DataError if an output (or its ``.json`` sidecar) is one of the inputs.

    ``outputs`` and ``inputs`` map a description (the flag, "--out") to a path; an input entry may
    also be a list of paths or None.
    """
    targets = []
    for what, out in outputs.items():
        targets += [(what, Path(out)), (f"the sidecar of {what}", sidecar_path(out))]
    for name, value in inputs.items():
        for path in _paths(value):
            for what, target in targets:
                if same_file(target, path):
                    link = "" if Path(target).resolve() == Path(path).resolve() else " (the same file by a link)"
                    raise DataError(f"refusing to write {what} {target}: it is {name} {path}{link}, "
                                    "an input of this command; choose another output file "
                                    "(nothing was written)")


def _paths(value) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)] if str(value).strip() and str(value).strip().lower() != "demo" else []
    return [p for item in value for p in _paths(item)]


def refuse_inside_dataset_folder(folder: str | os.PathLike, spec: str | os.PathLike, *,
                                 what: str) -> None:
    """Raise DataError when ``folder`` (to be filled by ``what``) is, holds or lies inside the
    dataset folder ``spec`` (a manifest file: only its own folder itself is refused, since a
    manifest's folder may hold much else)."""
    root = Path(spec).expanduser()
    if str(spec).strip().lower() == "demo" or not root.exists():
        return
    folder = Path(folder).expanduser()
    if root.is_file():
        root = root.parent
        inside = folder.resolve() == root.resolve() or is_within(root, folder)
    else:
        inside = is_within(folder, root) or is_within(root, folder)
    if inside:
        raise DataError(f"refusing to write {what} {folder}: it is inside (or holds) the dataset "
                        f"folder {root}; choose a folder outside the dataset (its files are never "
                        "written by this app)")
