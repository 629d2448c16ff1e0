"""CSV / Parquet manifests: one row per image with ``path,label`` (+ optional ``true_label``, ``split``).

Labels are class names or integers. Class names: a ``classes.txt`` (one per line) or ``classes.json``
(a list) beside the manifest if there is one; else ints 0..K-1 named "0".."K-1" when every label is an
integer; else the sorted unique names. Relative paths are resolved against the manifest's folder,
which is the dataset root; a path that leads outside it is refused, naming its row.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .dataset import Dataset
from .screen import screen_files

MANIFEST_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CLASS_FILES = ("classes.txt", "classes.json")
_INT = re.compile(r"^[+-]?\d+$")


def load_manifest(path: str | os.PathLike, *, split: str = "train") -> Dataset:
    """Load a manifest; unreadable or missing images go to ``bad_files``, bad rows raise DataError."""
    path = Path(path)
    table, rows = _read_rows(path, split)
    where = _Where(path)
    root = path.parent
    rel_paths = [_relative_path(value, root, where.row(r)) for value, r in zip(table["path"], rows)]
    given = [_label_text(v, "label", where.row(r)) for v, r in zip(table["label"], rows)]
    truth = None
    if "true_label" in table.columns:
        truth = [_label_text(v, "true_label", where.row(r)) for v, r in zip(table["true_label"], rows)]
    class_names, to_id = _classes(root, given + (truth or []), where)
    labels = np.array([to_id(v, where.row(r)) for v, r in zip(given, rows)], dtype=np.int64)
    true_labels = None
    if truth is not None:
        true_labels = np.array([to_id(v, where.row(r)) for v, r in zip(truth, rows)], dtype=np.int64)
    keep, bad_files = screen_files(root, rel_paths)
    if not keep.size:
        raise DataError(f"no readable images in {path}: all {len(rel_paths)} files are missing or bad "
                        f"(first: {bad_files.iloc[0]['path']}: {bad_files.iloc[0]['reason']})")
    return Dataset(
        name=path.stem, kind="manifest", root=root, class_names=class_names, labels=labels[keep],
        paths=tuple(rel_paths[i] for i in keep),
        true_labels=None if true_labels is None else true_labels[keep],
        split=split, bad_files=bad_files, spec=str(path),
    )


class _Where:
    """Formats "row 17 of x.csv (line 18)"; rows are 1-based data rows, the header is not counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_csv = MANIFEST_SUFFIXES.get(path.suffix.lower()) == "csv"

    def row(self, row: int) -> str:
        line = f" (line {row + 1})" if self.is_csv else ""
        return f"row {row} of {self.path.name}{line}"


def _read_rows(path: Path, split: str) -> tuple[pd.DataFrame, list[int]]:
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"manifest {path} must end in .csv or .parquet")
    if not path.is_file():
        raise DataError(f"manifest {path} not found; check the path")
    try:
        if kind == "csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        else:
            table = pd.read_parquet(path)
    except Exception as exc:  # pandas raises parser, unicode and arrow errors alike
        raise DataError(f"cannot read manifest {path}: {str(exc).splitlines()[0] if str(exc) else exc}; "
                        f"save it as UTF-8 CSV or Parquet with columns path,label") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DataError(f"manifest {path} lacks column(s) {', '.join(missing)}; it has "
                        f"{', '.join(table.columns) or 'none'}; name the columns path,label")
    rows = list(range(1, len(table) + 1))
    if "split" in table.columns:
        mask = table["split"].astype(str).str.strip().str.lower() == split
        if not mask.any():
            present = sorted(set(table["split"].astype(str)))
            raise DataError(f"manifest {path} has no rows with split {split!r}; splits present: "
                            f"{', '.join(present)}")
        rows = [r for r, keep in zip(rows, mask) if keep]
        table = table[mask.to_numpy()]
    if table.empty:
        raise DataError(f"manifest {path} has no rows; add one row per image (path,label)")
    return table.reset_index(drop=True), rows


def _label_text(value, column: str, where: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        value = ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise DataError(f"empty {column} in {where}; fill it in or drop the row")
    return text


def _relative_path(value, root: Path, where: str) -> str:
    text = "" if value is None else str(value).strip()
    if not text or text.lower() == "nan":
        raise DataError(f"empty path in {where}; give the image's path relative to the manifest")
    root_norm = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(text if os.path.isabs(text) else os.path.join(root_norm, text))
    if os.path.commonpath([root_norm, full]) != root_norm or full == root_norm:
        raise DataError(f"path {text!r} in {where} points outside the dataset folder {root}; "
                        f"move the image under that folder or use a path relative to the manifest")
    return Path(os.path.relpath(full, root_norm)).as_posix()


def _classes(root: Path, values: list[str], where: _Where):
    """Return (class_names, to_id(text, where_row) -> int)."""
    names = _read_class_file(root)
    if names is None and values and all(_INT.match(v) for v in values):
        numbers = [int(v) for v in values]
        if min(numbers) < 0:
            raise DataError(f"negative label {min(numbers)} in {where.path.name}; integer labels must "
                            f"be 0..K-1")
        names = tuple(str(i) for i in range(max(numbers) + 1))
    elif names is None:
        names = tuple(sorted(set(values)))
    lookup = {name: i for i, name in enumerate(names)}
    source = _class_source(root)

    def to_id(text: str, row_where: str) -> int:
        if text in lookup:
            return lookup[text]
        if _INT.match(text) and 0 <= int(text) < len(names):
            return int(text)
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise DataError(f"unknown label {text!r} in {row_where}; known classes ({source}): {shown}; "
                        f"fix the row or add the class")

    return names, to_id


def _read_class_file(root: Path) -> tuple[str, ...] | None:
    txt, js = root / CLASS_FILES[0], root / CLASS_FILES[1]
    if txt.is_file():
        names = [line.strip() for line in txt.read_text(encoding="utf-8-sig").splitlines()]
        names = [n for n in names if n]
    elif js.is_file():
        try:
            names = json.loads(js.read_text(encoding="utf-8-sig"))
        except ValueError as exc:
            raise DataError(f"cannot read {js}: {exc}; it must be a JSON list of class names") from None
        if not isinstance(names, list):
            raise DataError(f"{js} must be a JSON list of class names, not {type(names).__name__}")
        names = [str(n).strip() for n in names]
    else:
        return None
    if not names or len(set(names)) != len(names):
        raise DataError(f"class list beside the manifest in {root} is empty or repeats a name; list "
                        f"each class once, in label order")
    return tuple(names)


def _class_source(root: Path) -> str:
    for name in CLASS_FILES:
        if (root / name).is_file():
            return f"from {name}"
    return "from the manifest"
