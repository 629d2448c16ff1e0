"""Open embeddings you already have: features computed elsewhere (a GPU cluster, clip-retrieval).

Two layouts, detected from the folder:

* **A folder of arrays**: ``features.npy`` (or ``image_features.npy`` / ``img_emb.npy``), (N, D)
  float16/float32, one row per sample; labels from ``labels.npy`` (N,) or a ``label`` column of
  ``metadata.parquet`` / ``metadata.csv``; optional ``paths.txt`` (one path or id per line, or a
  ``path`` / ``image_path`` column of the metadata), ``true_labels.npy`` (N,), ``class_names.txt``
  (one name per line, line k = label k) and ``text_features.npy`` (M, D) with ``text_labels.npy``
  (M,) for zero-shot scores.
* **clip-retrieval's output**: ``img_emb/img_emb_<i>.npy`` with ``metadata/metadata_<i>.parquet``
  (its ``image_path`` column names the images); labels from a ``label`` column of the metadata
  (add it) or a top-level ``labels.npy`` in the shards' order; the other optional files as above.

Labels may be integers 0..K-1 or class names (then sorted, or in ``class_names.txt`` order).
Features are read in place as a memory map when they are one ``.npy`` of unit-norm rows; otherwise
(several shards, or rows that are not L2-normalised) a normalised copy is written once into the
cache, named by the files' identity. Nothing is ever written into the user's folder.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import DataError
from .dataset import Dataset

log = logging.getLogger(__name__)

FEATURE_NAMES = ("features.npy", "image_features.npy", "img_emb.npy")
METADATA_NAMES = ("metadata.parquet", "metadata.csv")
PATH_COLUMNS = ("path", "image_path", "filepath", "url")
_SHARD = re.compile(r"^img_emb_(\d+)\.npy$")
_NORM_TOLERANCE = 1e-2
_ROWS = 65536


@dataclass(frozen=True, eq=False)
class PrecomputedEmbeddings:
    """Features opened from a folder: ``features`` (N, D) float16/32 unit-norm rows (a read-only
    memmap), ``text_features`` (M, D) / ``text_labels`` (M,) or None, ``key`` their identity."""

    features: np.ndarray
    text_features: np.ndarray | None
    text_labels: np.ndarray | None
    key: str


def is_embeddings_folder(path: Path) -> bool:
    """True when ``path`` is a folder in one of the two layouts above."""
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in FEATURE_NAMES):
        return True
    return (path / "img_emb").is_dir() and bool(_shards(path))


def load_embeddings_dataset(root: str | os.PathLike, *, split: str = "train") -> Dataset:
    """The labelled dataset described by a precomputed-embeddings folder (no images are read).

    ``Dataset.kind`` is ``"embeddings"``; :func:`open_embeddings` gives its features.
    """
    root = Path(root).expanduser()
    if split != "train":
        raise DataError(f"{root}: precomputed embeddings have one split; use split 'train'")
    files = _feature_files(root)
    n = sum(_npy_shape(f)[0] for f in files)
    metadata = _metadata(root)
    labels_raw = _labels(root, metadata, n)
    class_names, labels = _class_indices(root, labels_raw)
    true_labels = _optional_labels(root / "true_labels.npy", n, class_names)
    paths = _paths(root, metadata, n)
    return Dataset(
        name=root.name, kind="embeddings", root=root, class_names=class_names, labels=labels,
        paths=paths, true_labels=true_labels, split=split, spec=str(root),
        content_id=_files_identity(files),
    )


def open_embeddings(dataset: Dataset, *, cache_root: str | os.PathLike) -> PrecomputedEmbeddings:
    """Features of an ``"embeddings"`` dataset, unit-norm rows, memory-mapped (never all in RAM)."""
    root = Path(dataset.root)
    files = _feature_files(root)
    identity = _files_identity(files)
    if len(files) == 1 and _unit_norm(np.load(files[0], mmap_mode="r")):
        features = np.load(files[0], mmap_mode="r")
    else:
        features = _normalised_copy(files, Path(cache_root) / "precomputed" / f"{identity}.npy")
    if features.shape[0] != len(dataset):
        raise DataError(f"{root}: the features have {features.shape[0]} rows but the dataset has "
                        f"{len(dataset)} labels; the files changed since the dataset was opened")
    text_features, text_labels = _text(root, features.shape[1], dataset.num_classes)
    return PrecomputedEmbeddings(features, text_features, text_labels, identity)


def _feature_files(root: Path) -> list[Path]:
    for name in FEATURE_NAMES:
        if (root / name).is_file():
            return [root / name]
    shards = _shards(root)
    if not shards:
        raise DataError(f"{root}: no features found; put them in {FEATURE_NAMES[0]} (N, D) or in "
                        "clip-retrieval's img_emb/img_emb_0.npy, ...")
    return shards


def _shards(root: Path) -> list[Path]:
    folder = root / "img_emb"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SHARD.match(p.name))]
    return [p for _, p in sorted(found)]


def _npy_shape(path: Path) -> tuple[int, ...]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc}); save it with numpy.save") from exc
    if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] < 1:
        raise DataError(f"{path}: features must be a 2-D float array (N, D), got {array.dtype} "
                        f"{array.shape}")
    return array.shape


def _metadata(root: Path) -> pd.DataFrame | None:
    for name in METADATA_NAMES:
        path = root / name
        if path.is_file():
            return _read_table(path)
    shards = sorted((root / "metadata").glob("metadata_*.parquet"),
                    key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if shards:
        return pd.concat([_read_table(p) for p in shards], ignore_index=True)
    return None


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, keep_default_na=False, dtype=str)
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow / csv parser errors of many types
        raise DataError(f"{path}: cannot read the metadata table ({exc})") from exc


def _labels(root: Path, metadata: pd.DataFrame | None, n: int) -> np.ndarray:
    path = root / "labels.npy"
    if path.is_file():
        labels = np.load(path, allow_pickle=False)
        source = str(path)
    elif metadata is not None and "label" in metadata.columns:
        labels = metadata["label"].to_numpy()
        source = "the metadata's label column"
    else:
        raise DataError(f"{root}: no labels; add labels.npy (one class index per feature row) or a "
                        "'label' column to the metadata")
    labels = np.asarray(labels).ravel()
    if labels.size != n:
        raise DataError(f"{source} has {labels.size} labels but the features have {n} rows; "
                        "give one label per row, in the same order")
    return labels


def _class_indices(root: Path, labels: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    names_file = root / "class_names.txt"
    names = None
    if names_file.is_file():
        names = tuple(line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()
                      if line.strip())
    missing = np.flatnonzero(pd.isna(labels) | np.asarray([str(v).strip() in ("", "nan", "None")
                                                          for v in labels], dtype=bool))
    if missing.size:
        raise DataError(f"{root}: rows {missing[:10].tolist()} have no label "
                        f"({missing.size} in all); label every row or drop those rows")
    if labels.dtype.kind == "O" and all(isinstance(v, (int, float, np.integer, np.floating)) for v in labels[:1000]):
        labels = labels.astype(np.float64)
    if labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and _whole(labels)):
        return _integer_classes(root, labels.astype(np.int64), names)
    text = np.asarray([str(v).strip() for v in labels], dtype=object)
    if all(re.fullmatch(r"[+-]?\d+(\.0*)?", v) for v in text[:1000]) and \
            all(re.fullmatch(r"[+-]?\d+(\.0*)?", v) for v in text):
        return _integer_classes(root, np.asarray([int(float(v)) for v in text], np.int64), names)
    empty = np.flatnonzero(text == "")
    if empty.size:
        raise DataError(f"{root}: rows {empty[:10].tolist()} have no label; label every row")
    order = names if names is not None else tuple(sorted(set(text)))
    lookup = {name: i for i, name in enumerate(order)}
    unknown = sorted(set(text) - set(lookup))
    if unknown:
        raise DataError(f"{names_file}: labels {unknown[:10]} are not listed; add them")
    return order, np.fromiter((lookup[v] for v in text), np.int64, count=text.size)


def _whole(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all() and (values == np.round(values)).all())


def _integer_classes(root, labels, names):
    if labels.size and labels.min() < 0:
        bad = np.flatnonzero(labels < 0)[:10].tolist()
        raise DataError(f"{root}: rows {bad} have negative labels; use class indices 0..K-1")
    k = int(labels.max()) + 1 if labels.size else 0
    if names is None:
        names = tuple(f"class {i}" for i in range(k))
    elif len(names) < k:
        raise DataError(f"{root / 'class_names.txt'} lists {len(names)} classes but the labels go "
                        f"up to {k - 1}; list one name per class")
    return names, labels


def _optional_labels(path: Path, n: int, class_names) -> np.ndarray | None:
    if not path.is_file():
        return None
    labels = np.load(path, allow_pickle=False).ravel()
    if labels.size != n or labels.dtype.kind not in "iu" or (labels.size and (
            labels.min() < 0 or labels.max() >= len(class_names))):
        raise DataError(f"{path}: need {n} integer labels in 0..{len(class_names) - 1}")
    return labels.astype(np.int64)


def _paths(root: Path, metadata: pd.DataFrame | None, n: int) -> tuple[str, ...]:
    listed = root / "paths.txt"
    if listed.is_file():
        paths = listed.read_text(encoding="utf-8").splitlines()
        if len(paths) != n:
            raise DataError(f"{listed} has {len(paths)} lines but the features have {n} rows")
        return tuple(paths)
    if metadata is not None:
        for column in PATH_COLUMNS:
            if column in metadata.columns:
                if len(metadata) != n:
                    raise DataError(f"{root}: the metadata has {len(metadata)} rows but the features "
                                    f"have {n}")
                return tuple(metadata[column].astype(str))
    return tuple(f"row/{i:07d}" for i in range(n))


def _files_identity(files: list[Path]) -> str:
    """Identity of the feature files: names, sizes, mtimes and a sample of their bytes."""
    parts = []
    for path in files:
        stat = path.stat()
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
            handle.seek(max(0, stat.st_size - (1 << 16)))
            tail = handle.read()
        parts.append({"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                      "head": atomic.hash_json(head.hex())[:16], "tail": atomic.hash_json(tail.hex())[:16]})
    return atomic.hash_json({"format": "precomputed-1", "files": parts})[:24]


def _unit_norm(features: np.ndarray) -> bool:
    step = max(1, features.shape[0] // 4096)
    sample = np.asarray(features[::step], dtype=np.float32)
    if not np.isfinite(sample).all():
        return False
    return bool(np.all(np.abs(np.linalg.norm(sample, axis=1) - 1.0) < _NORM_TOLERANCE))


def _normalised_copy(files: list[Path], target: Path) -> np.ndarray:
    """One (N, D) float32 file of unit-norm rows from ``files``, written once (atomically)."""
    if target.is_file() and atomic.read_sidecar(target):
        return np.load(target, mmap_mode="r")
    shapes = [_npy_shape(f) for f in files]
    dims = {s[1] for s in shapes}
    if len(dims) != 1:
        raise DataError(f"{files[0].parent}: the shards have different widths {sorted(dims)}")
    n, dim = sum(s[0] for s in shapes), dims.pop()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        row = 0
        for path in files:
            shard = np.load(path, mmap_mode="r")
            for lo in range(0, shard.shape[0], _ROWS):
                block = np.asarray(shard[lo:lo + _ROWS], dtype=np.float32)
                bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
                if bad.size:
                    raise DataError(f"{path}: row {lo + int(bad[0])} is not finite (NaN or inf); "
                                    "re-embed or drop that image")
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                out[row:row + block.shape[0]] = block / np.where(norms > 0, norms, 1.0)
                row += block.shape[0]
        out.flush()
        del out
    atomic.write_sidecar(target, {"source": [str(f) for f in files], "n": n, "dim": dim})
    log.info("wrote normalised features for %d rows to %s", n, target)
    return np.load(target, mmap_mode="r")


def _text(root: Path, dim: int, num_classes: int):
    features_path, labels_path = root / "text_features.npy", root / "text_labels.npy"
    if not features_path.is_file():
        return None, None
    if not labels_path.is_file():
        raise DataError(f"{features_path} needs {labels_path.name}: the class of each prompt row")
    text = np.load(features_path, allow_pickle=False).astype(np.float32)
    labels = np.load(labels_path, allow_pickle=False).ravel()
    if text.ndim != 2 or text.shape[1] != dim or labels.size != text.shape[0]:
        raise DataError(f"{features_path}: need (M, {dim}) text features and M labels in "
                        f"{labels_path.name}; got {text.shape} and {labels.size}")
    if not np.isfinite(text).all():
        raise DataError(f"{features_path}: contains NaN or inf; re-embed the prompts")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{labels_path}: need integer classes in 0..{num_classes - 1}")
    norms = np.linalg.norm(text, axis=1, keepdims=True)
    return text / np.where(norms > 0, norms, 1.0), labels.astype(np.int64)
