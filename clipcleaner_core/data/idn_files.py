"""The CIFAR-10 instance-dependent noise files the paper's authors publish (``dependent0.1.csv`` ...).

Each is a CSV with the header ``label,label_noisy`` and one row per CIFAR-10 training sample, in
the dataset's order: the clean label and the noisy one. :func:`noise_from_file` reads them through
:func:`read_label_pair_csv` (so ``--noise file:dependent0.4.csv`` works everywhere);
:func:`check_clean_labels` verifies the ``label`` column against the dataset before the noisy
labels are used, naming the first line that disagrees.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

HEADER = ("label", "label_noisy")
_FIX = "use the file published for CIFAR-10 (train split, original order) unchanged"


def is_label_pair_csv(path: str | os.PathLike) -> bool:
    """True when the CSV's header is ``label,label_noisy``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return tuple(c.strip().lower() for c in first.strip().split(",")) == HEADER


def read_label_pair_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) labels, each (N,) int64, from a ``label,label_noisy`` CSV.

    A row without exactly two non-negative integers raises DataError naming the file and line.
    """
    path = Path(path)
    clean, noisy = [], []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(c.strip().lower() for c in header) != HEADER:
                raise DataError(f"{path} line 1: expected the header 'label,label_noisy', got "
                                f"{','.join(header or [])!r}; {_FIX}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                fields = [c.strip() for c in row]
                if len(fields) != 2 or not all(f.isdecimal() for f in fields):
                    raise DataError(f"{path} line {line}: expected two class indices 'label,label_noisy', "
                                    f"got {','.join(row)!r}; {_FIX}")
                clean.append(int(fields[0]))
                noisy.append(int(fields[1]))
    except OSError as exc:
        raise DataError(f"cannot read noise file {path} ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise DataError(f"noise file {path} is not UTF-8 text; {_FIX}") from None
    return np.asarray(clean, dtype=np.int64), np.asarray(noisy, dtype=np.int64)


def check_clean_labels(path: str | os.PathLike, file_clean: np.ndarray, dataset_labels: np.ndarray) -> None:
    """Raise DataError unless the file's ``label`` column equals the dataset's labels, row for row.

    The message names the first disagreeing line of the file (the header is line 1).
    """
    dataset_labels = np.asarray(dataset_labels, dtype=np.int64)
    if len(file_clean) != len(dataset_labels):
        raise DataError(f"noise file {path} has {len(file_clean)} rows but the dataset has "
                        f"{len(dataset_labels)} samples; {_FIX}")
    differs = np.flatnonzero(file_clean != dataset_labels)
    if differs.size:
        row = int(differs[0])
        raise DataError(f"noise file {path} line {row + 2}: label {int(file_clean[row])} but the dataset's "
                        f"sample {row} has label {int(dataset_labels[row])} ({differs.size} rows differ); "
                        f"the file was made for another dataset or order: {_FIX}")
