"""The in-memory description of a labelled image dataset that every later stage consumes."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

BAD_FILE_COLUMNS = ("path", "reason")


def empty_bad_files() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in BAD_FILE_COLUMNS})


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset.

    Samples are either files on disk (``paths`` relative to ``root``; ``images`` is None) or held in
    memory (``images`` is an (N, H, W, 3) uint8 array, CIFAR and the demo; ``paths`` then holds
    stable sample ids such as ``"train/00012"``).

    Attributes:
        name: short human name ("demo", "cifar10-train", the folder name, ...).
        kind: one of "demo", "imagefolder", "manifest", "cifar10", "cifar100".
        root: dataset root folder (paths are relative to it).
        class_names: K class names; label k means ``class_names[k]``.
        labels: (N,) int64 given labels in [0, K), possibly noisy.
        paths: N sample paths (relative to ``root``) or ids.
        images: optional (N, H, W, 3) uint8 pixels for in-memory datasets.
        true_labels: optional (N,) int64 ground-truth labels (benchmarks, synthetic noise).
        split: "train" or "test".
        bad_files: DataFrame(path, reason) of files skipped while loading (never fatal).
        noise: description of the synthetic noise applied, if any (JSON-serialisable dict).
        spec: the string the dataset was loaded from (``"demo"``, a path), for recipes.
        content_id: optional identity of the samples' content (e.g. a hash of the list files or of
            precomputed features) used by the fingerprints instead of a stat of every file, for
            datasets of 10^6 samples that must load in seconds.
    """

    name: str
    kind: str
    root: Path
    class_names: tuple[str, ...]
    labels: np.ndarray
    paths: tuple[str, ...]
    images: np.ndarray | None = None
    true_labels: np.ndarray | None = None
    split: str = "train"
    bad_files: pd.DataFrame = field(default_factory=empty_bad_files)
    noise: dict | None = None
    spec: str = ""
    content_id: str | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int64)
        object.__setattr__(self, "labels", labels)
        if self.true_labels is not None:
            object.__setattr__(self, "true_labels", np.asarray(self.true_labels, dtype=np.int64))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "paths", tuple(self.paths))
        object.__setattr__(self, "root", Path(self.root))
        n = len(labels)
        if len(self.paths) != n:
            raise DataError(f"dataset {self.name!r}: {len(self.paths)} paths but {n} labels")
        if self.images is not None and len(self.images) != n:
            raise DataError(f"dataset {self.name!r}: {len(self.images)} images but {n} labels")
        if self.true_labels is not None and len(self.true_labels) != n:
            raise DataError(f"dataset {self.name!r}: {len(self.true_labels)} true labels but {n} labels")
        k = len(self.class_names)
        if n and (labels.min() < 0 or labels.max() >= k):
            bad = int(np.flatnonzero((labels < 0) | (labels >= k))[0])
            raise DataError(
                f"dataset {self.name!r}: sample {bad} has label {labels[bad]} outside 0..{k - 1}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_truth(self) -> bool:
        return self.true_labels is not None

    @property
    def is_noisy(self) -> np.ndarray | None:
        """(N,) bool: given label differs from the true label, or None without ground truth."""
        if self.true_labels is None:
            return None
        return self.labels != self.true_labels

    def abspath(self, i: int) -> Path:
        """Absolute file path of sample ``i`` (file-backed datasets only)."""
        return self.root / self.paths[i]

    def class_counts(self) -> np.ndarray:
        """(K,) number of samples per given label."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def replace(self, **changes) -> "Dataset":
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """Content hash of the sample list, file sizes and mtimes (or pixels), labels and classes.

        Two datasets with the same fingerprint produce the same embeddings and the same scores.
        Computed once per ``Dataset`` object (it stats every file): a dataset is immutable, and
        files changed on disk are seen by loading the dataset again.
        """
        return self._fingerprint

    def content_fingerprint(self) -> str:
        """Like :meth:`fingerprint` but ignoring labels: what embeddings depend on."""
        return self._content_fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        return self._hash(self.labels)

    @functools.cached_property
    def _content_fingerprint(self) -> str:
        return self._hash(np.zeros(len(self), dtype=np.int64))

    def _hash(self, labels: np.ndarray) -> str:
        digest = hashlib.sha256()
        digest.update(f"{self.kind}|{self.split}|{len(self)}|".encode())
        digest.update("\x1f".join(self.class_names).encode("utf-8", "surrogateescape"))
        digest.update(labels.astype("<i8").tobytes())
        if self.content_id is not None:
            digest.update(f"content|{self.content_id}|".encode())
            digest.update("\x1f".join(self.paths).encode("utf-8", "surrogateescape"))
        elif self.images is not None:
            digest.update(memoryview(np.ascontiguousarray(self.images)))  # no copy of the pixels
            digest.update("\x1f".join(self.paths).encode("utf-8", "surrogateescape"))
        else:
            for rel in self.paths:
                digest.update(rel.encode("utf-8", "surrogateescape"))  # names that are not UTF-8 too
                try:
                    st = os.stat(self.root / rel)
                    digest.update(f"|{st.st_size}|{st.st_mtime_ns}\x1e".encode())
                except OSError:
                    digest.update(b"|missing\x1e")
        return digest.hexdigest()[:16]
