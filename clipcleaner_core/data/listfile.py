"""Datasets described by list files (``<relative path> <label>`` per line), as the paper's benchmarks ship.

Red Mini-ImageNet, mini-WebVision and Clothing1M list their images in text files. Loading them never
touches the images: the lists are parsed (about a second per million lines) and the dataset's
fingerprint is taken from the list files' size and modification time plus the sample list and
labels, instead of a ``stat`` per image (a million stats take minutes on network storage).
Unreadable images are found later, when they are embedded, and left out there.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset


@dataclass(frozen=True, eq=False)
class ListedDataset(Dataset):
    """A :class:`Dataset` whose samples come from list files; ``list_files`` are those files.

    Its fingerprint hashes the list files' (name, size, mtime), the sample paths and the labels:
    editing a list changes it, replacing an image in place does not (reload after such a change
    by touching the list file).
    """

    list_files: tuple[str, ...] = ()

    def _hash(self, labels: np.ndarray) -> str:
        digest = hashlib.sha256()
        digest.update(f"{self.kind}|{self.split}|{len(self)}|".encode())
        digest.update("\x1f".join(self.class_names).encode())
        digest.update(labels.astype("<i8").tobytes())
        for name in self.list_files:
            try:
                st = os.stat(name)
                digest.update(f"{Path(name).name}|{st.st_size}|{st.st_mtime_ns}\x1e".encode())
            except OSError:
                digest.update(f"{Path(name).name}|missing\x1e".encode())
        digest.update("\x1f".join(self.paths).encode())
        return digest.hexdigest()[:16]


def read_pairs(path: str | os.PathLike, *, num_classes: int | None = None,
               fix: str = "") -> tuple[list[str], np.ndarray]:
    """Read ``<name> <integer label>`` lines; blank lines are skipped.

    Returns (names, labels (N,) int64). A line without exactly two fields, a label that is not a
    non-negative integer, or (with ``num_classes``) a label >= num_classes raises DataError naming
    the file and the line number.
    """
    path = Path(path)
    names: list[str] = []
    labels: list[int] = []
    for number, line in _lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdecimal():
            raise DataError(f"{path} line {number}: expected '<image path> <label>', got {line.strip()!r}; "
                            f"fix or delete the line{fix}")
        label = int(fields[1])
        if num_classes is not None and label >= num_classes:
            raise DataError(f"{path} line {number}: label {label} is outside 0..{num_classes - 1}; "
                            f"fix the line{fix}")
        names.append(fields[0])
        labels.append(label)
    return names, np.asarray(labels, dtype=np.int64)


def read_keys(path: str | os.PathLike, *, fix: str = "") -> list[str]:
    """Read one ``<relative path>`` per line (blank lines skipped); a line with spaces is refused."""
    path = Path(path)
    keys: list[str] = []
    for number, line in _lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise DataError(f"{path} line {number}: expected one image path, got {line.strip()!r}; "
                            f"fix or delete the line{fix}")
        keys.append(fields[0])
    return keys


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except FileNotFoundError:
        raise DataError(f"list file {path} is missing; extract the dataset archive unchanged") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"list file {path} is not UTF-8 text ({exc.reason}); extract the dataset "
                        "archive unchanged") from None


def require_files(root: Path, names, what: str) -> None:
    """Raise DataError naming the first of ``names`` (relative to ``root``) that is missing."""
    for name in names:
        if not (root / name).exists():
            raise DataError(f"{root} is not a {what} folder: {name} is missing; point at the folder "
                            f"that holds it (the dataset archive extracted unchanged)")
