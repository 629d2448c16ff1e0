"""CSV / Parquet manifests: one row per image with ``path,label`` (+ optional ``true_label``, ``split``).

Labels are class names or integers. Class names: a ``classes.txt`` (one per line) or ``classes.json``
(a list) beside the manifest if there is one; else ints 0..K-1 named "0".."K-1" when every label is an
integer; else the sorted unique names. Relative paths are resolved against the manifest's folder
and must stay inside it (``../x.png`` is refused, naming its row); absolute paths may point anywhere
(an exported manifest names images outside its own folder that way). The dataset root is the
manifest's folder, or the folder all images share when some paths are absolute. The app still
checks every image against its data roots.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..validation import SHOWN_ROWS, describe_rows, integer_label, is_missing_label, is_non_integer_number
from .dataset import BAD_FILE_COLUMNS, Dataset
from .screen import screen_files

MANIFEST_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CLASS_FILES = ("classes.txt", "classes.json")
_INT = re.compile(r"^[+-]?\d+$")


def load_manifest(path: str | os.PathLike, *, split: str = "train") -> Dataset:
    """Load a manifest; unreadable or missing images go to ``bad_files``, bad rows raise DataError.

    Label rules (README, "Labels"): integer spellings (``1``, ``01``, `` 1``, ``1.0``) are one
    class; missing labels (empty, NaN, None), non-integer numbers (0.5) and a path listed twice
    with different labels are refused, naming the rows; a path listed twice with the same labels
    is kept once and its later rows are listed in ``bad_files``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name, colour in [("cat/a.png", "red"), ("cat/b.png", "red"), ("dog/c.png", "blue")]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.new("RGB", (8, 8), colour).save(root / name)
    >>> from clipcleaner_core.data import load_manifest
    >>> rows = ["path,label", "cat/a.png,cat", "dog/c.png,cat"]  # c.png is mislabelled
    >>> _ = (root / "labels.csv").write_text(chr(10).join(rows))
    >>> dataset = load_manifest(root / "labels.csv")
    >>> len(dataset), dataset.class_names, dataset.labels.tolist()
    (2, ('cat',), [0, 0])
    """
    path = Path(path)
    table, rows = _read_rows(path, split)
    where = _Where(path)
    root = _dataset_root(path.parent, table["path"])
    rel_paths = [_relative_path(value, path.parent, root, where.row(r))
                 for value, r in zip(table["path"], rows)]
    given = _label_column(table["label"], "label", rows, where)
    truth = None
    if "true_label" in table.columns:
        truth = _label_column(table["true_label"], "true_label", rows, where)
    # the class file lies beside the manifest, wherever its (absolute) image paths lead
    class_names, to_id = _classes(path.parent, given + (truth or []), where)
    labels = np.array([to_id(v, where.row(r)) for v, r in zip(given, rows)], dtype=np.int64)
    true_labels = None
    if truth is not None:
        true_labels = np.array([to_id(v, where.row(r)) for v, r in zip(truth, rows)], dtype=np.int64)
    first, repeats = _unique_rows(rel_paths, labels, true_labels, rows, where)
    keep, bad_files = screen_files(root, [rel_paths[i] for i in first])
    keep = first[keep]
    bad_files = pd.concat([bad_files, repeats], ignore_index=True) if len(repeats) else bad_files
    if not keep.size:
        raise DataError(f"no readable images in {path}: all {len(rel_paths)} files are missing or bad "
                        f"(first: {bad_files.iloc[0]['path']}: {bad_files.iloc[0]['reason']})")
    return Dataset(
        name=path.stem, kind="manifest", root=root, class_names=class_names, labels=labels[keep],
        paths=tuple(rel_paths[i] for i in keep),
        true_labels=None if true_labels is None else true_labels[keep],
        split=split, bad_files=bad_files, spec=str(path),
    )


def _unique_rows(rel_paths, labels, true_labels, rows, where) -> tuple[np.ndarray, pd.DataFrame]:
    """Indices of each path's first row; repeats with the same labels are listed, others refused."""
    first_row: dict[str, int] = {}
    keep, repeats, conflicts = [], [], []
    for i, rel in enumerate(rel_paths):
        j = first_row.setdefault(rel, i)
        if j == i:
            keep.append(i)
            continue
        same = labels[i] == labels[j] and (true_labels is None or true_labels[i] == true_labels[j])
        (repeats if same else conflicts).append((i, j))
    if conflicts:
        shown = "; ".join(f"{rel_paths[i]!r} in rows {rows[j]} and {rows[i]}"
                          for i, j in conflicts[:SHOWN_ROWS])
        more = f" ({len(conflicts)} in all)" if len(conflicts) > SHOWN_ROWS else ""
        raise DataError(f"{where.path.name} lists the same image twice with different labels: "
                        f"{shown}{more}; keep one row per image")
    table = pd.DataFrame([(rel_paths[i], f"listed again in {where.row(rows[i])} with the same label "
                           f"as row {rows[j]}; used once") for i, j in repeats],
                         columns=list(BAD_FILE_COLUMNS)).astype("object")
    return np.asarray(keep, dtype=np.int64), table


def _not_utf8(path: Path) -> str:
    """Name the first line of ``path`` that is not UTF-8 (its bytes shown as \\xNN)."""
    lines = path.read_bytes().splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = line.decode("utf-8", "backslashreplace")[:120]
            return (f"manifest {path} is not UTF-8: line {number} ({shown!r}) has the byte "
                    f"0x{line[exc.start]:02x}; save the manifest as UTF-8 (paths in any language "
                    "are fine in UTF-8)")
    return f"manifest {path} is not UTF-8; save it as UTF-8"


def _label_column(values, column: str, rows: list[int], where: "_Where") -> list[str]:
    """Stripped label texts (a whole float such as Parquet's 1.0 becomes "1").

    Raises DataError naming every offending row (the first few) for missing labels and for
    non-integer numbers.
    """
    texts, missing, fractional = [], [], []
    for value, row in zip(values.tolist(), rows):
        if is_missing_label(value):
            missing.append(row)
            texts.append("")
        elif is_non_integer_number(value):
            fractional.append((row, value))
            texts.append("")
        else:
            texts.append(str(int(value)) if isinstance(value, (float, np.floating)) else str(value).strip())
    if missing:
        raise DataError(f"missing {column} (empty, NaN or None) in {where.path.name}: "
                        f"{describe_rows(missing)}; fill them in or drop those rows")
    if fractional:
        raise DataError(f"{column} is not a whole number in {where.path.name}: "
                        f"{describe_rows([r for r, _ in fractional], values=[v for _, v in fractional])}; "
                        f"labels are class names or integer class ids (0.5 is neither)")
    return texts


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
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path)) from None
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


def _dataset_root(folder: Path, values) -> Path:
    """The manifest's folder; with absolute paths, the deepest folder holding every image (and the
    manifest's folder too when some paths are relative)."""
    texts = [str(v).strip() for v in values if v is not None]
    absolute = [os.path.dirname(os.path.normpath(t)) for t in texts if os.path.isabs(t)]
    if not absolute:
        return folder
    relative = len(absolute) < len(texts)
    return Path(os.path.commonpath(absolute + ([os.path.abspath(folder)] if relative else [])))


def _relative_path(value, folder: Path, root: Path, where: str) -> str:
    """``value`` relative to ``root``: a relative path is resolved against the manifest's
    ``folder`` and must stay inside it."""
    text = "" if value is None else str(value).strip()
    if not text or text.lower() == "nan":
        raise DataError(f"empty path in {where}; give the image's path relative to the manifest")
    folder_norm = os.path.normpath(os.path.abspath(folder))
    if os.path.isabs(text):
        full = os.path.normpath(text)
    else:
        full = os.path.normpath(os.path.join(folder_norm, text))
        if os.path.commonpath([folder_norm, full]) != folder_norm or full == folder_norm:
            raise DataError(f"path {text!r} in {where} points outside the manifest's folder "
                            f"{folder}; move the image under that folder or give its absolute path")
    return Path(os.path.relpath(full, os.path.normpath(os.path.abspath(root)))).as_posix()


def _classes(root: Path, values: list[str], where: _Where):
    """Return (class_names, to_id(text, where_row) -> int).

    A class file's names are matched as written first; otherwise an integer spelling is the class
    id. Without a class file, integer spellings are one class each ("1" == "01" == "1.0").
    """
    names = _read_class_file(root)
    numbers = {v: integer_label(v) for v in set(values)}
    if names is None and values and all(n is not None for n in numbers.values()):
        if min(numbers.values()) < 0:
            raise DataError(f"negative label {min(numbers.values())} in {where.path.name}; integer "
                            "labels must be class ids 0..K-1")
        names = tuple(str(i) for i in range(max(numbers.values()) + 1))
    elif names is None:
        names = tuple(sorted({v if numbers[v] is None else str(numbers[v]) for v in values}))
    lookup = {name: i for i, name in enumerate(names)}
    source = _class_source(root)

    def to_id(text: str, row_where: str) -> int:
        if text in lookup:
            return lookup[text]
        number = integer_label(text)
        if number is not None and str(number) in lookup:
            return lookup[str(number)]
        if number is not None and 0 <= number < len(names):
            return number
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
