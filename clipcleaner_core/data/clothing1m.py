"""Clothing1M (Xiao et al., CVPR 2015): one million web images of clothes with noisy labels.

Layout (the annotation files beside ``images/``, as distributed)::

    ROOT/noisy_label_kv.txt        "<relative path> <label>" for the noisy set
    ROOT/clean_label_kv.txt        "<relative path> <label>" for the human-checked images
    ROOT/noisy_train_key_list.txt  the ~1M training images (labels from noisy_label_kv)
    ROOT/clean_val_key_list.txt    the validation images (labels from clean_label_kv)
    ROOT/clean_test_key_list.txt   the test images (labels from clean_label_kv)
    ROOT/category_names_eng.txt    the 14 class names, in label order

Loading reads only these text files (a second or two for the 1M list) and never the images; the
fingerprint comes from the list files (:class:`~.listfile.ListedDataset`). ``subsample`` draws the
class-balanced subset the paper's code trains on (up to ``subsample / 14`` images per class, from
a seeded shuffle).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .listfile import ListedDataset, read_keys, read_pairs, require_files

logger = logging.getLogger(__name__)

CLOTHING1M_CLASSES = ("T-shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
                      "Jacket", "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
NOISY_KV, CLEAN_KV, NAMES = "noisy_label_kv.txt", "clean_label_kv.txt", "category_names_eng.txt"
KEY_LISTS = {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt",
             "test": "clean_test_key_list.txt"}
_FIX = "; extract the Clothing1M annotation files unchanged"


def is_clothing1m(root: str | os.PathLike) -> bool:
    root = Path(root)
    return (root / NOISY_KV).is_file() and (root / KEY_LISTS["train"]).is_file()


def load_clothing1m(root: str | os.PathLike, *, split: str = "train", subsample: int | None = None,
                    seed: int = 0) -> ListedDataset:
    """Load a Clothing1M split: "train" (noisy labels), "val" or "test" (clean labels).

    ``subsample`` (train only) keeps the class-balanced subset of :func:`balanced_subsample`.
    A key missing from its label file, or a malformed line, raises DataError naming file and line.
    """
    if split not in KEY_LISTS:
        raise DataError(f"Clothing1M split {split!r} does not exist; use one of {', '.join(KEY_LISTS)}")
    root = Path(root).expanduser()
    kv_name = NOISY_KV if split == "train" else CLEAN_KV
    require_files(root, (kv_name, KEY_LISTS[split]), "Clothing1M")
    class_names = read_class_names(root)
    kv_paths, kv_labels = read_pairs(root / kv_name, num_classes=len(class_names), fix=_FIX)
    label_of = dict(zip(kv_paths, kv_labels.tolist()))
    key_file = root / KEY_LISTS[split]
    keys = read_keys(key_file, fix=_FIX)
    try:
        labels = np.fromiter((label_of[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as exc:
        line = keys.index(exc.args[0]) + 1
        raise DataError(f"{key_file} line {line}: {exc.args[0]} has no label in {kv_name}{_FIX}") from None
    if not keys:
        raise DataError(f"{key_file} lists no images{_FIX}")
    rows = None
    if subsample is not None:
        if split != "train":
            raise DataError("a class-balanced subsample is drawn from the training split only")
        rows = balanced_subsample(labels, subsample, num_classes=len(class_names), seed=seed)
        keys = [keys[i] for i in rows]
        labels = labels[rows]
    logger.info("Clothing1M %s: %d images%s", split, len(keys),
                "" if rows is None else f" (class-balanced subsample of {subsample}, seed {seed})")
    name = f"clothing1m-{split}" + ("" if rows is None else f"-balanced{subsample}-{seed}")
    return ListedDataset(name=name, kind="clothing1m", root=root, class_names=class_names, labels=labels,
                         paths=tuple(keys), split=split, spec=str(root),
                         list_files=(str(root / kv_name), str(key_file)))


def read_class_names(root: Path) -> tuple[str, ...]:
    """The 14 names from ``category_names_eng.txt`` (the built-in names when the file is absent)."""
    path = root / NAMES
    if not path.is_file():
        return CLOTHING1M_CLASSES
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) != len(CLOTHING1M_CLASSES) or len(set(names)) != len(names):
        raise DataError(f"{path} lists {len(names)} class names; Clothing1M has 14 distinct ones, one "
                        f"per line{_FIX}")
    return names


def balanced_subsample(labels: np.ndarray, total: int, *, num_classes: int, seed: int = 0) -> np.ndarray:
    """Row indices of a class-balanced subset, as the paper's Clothing1M loader draws it.

    The rows are shuffled (seeded) and taken in that order while their class has fewer than
    ``total / num_classes`` rows and fewer than ``total`` rows are taken. Returned sorted.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if total < num_classes:
        raise DataError(f"subsample {total} is smaller than the {num_classes} classes; ask for more")
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[order]
    # rank of each row within its class, in shuffled order
    by_class = np.argsort(shuffled, kind="stable")
    starts = np.searchsorted(shuffled[by_class], np.arange(num_classes))
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - starts[shuffled[by_class]]
    chosen = order[rank < total / num_classes][:total]
    return np.sort(chosen)


def clean_labels_of(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(rows, clean labels) for the samples of ``dataset`` that ``clean_label_kv.txt`` also labels.

    About 37k of the 1M noisy training images were checked by hand; their clean labels are the
    only ground truth the training set has, enough to measure a selection's precision and recall
    on that part.
    """
    root = Path(dataset.root)
    if not (root / CLEAN_KV).is_file():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    kv_paths, kv_labels = read_pairs(root / CLEAN_KV, num_classes=dataset.num_classes, fix=_FIX)
    label_of = dict(zip(kv_paths, kv_labels.tolist()))
    rows = np.fromiter((i for i, p in enumerate(dataset.paths) if p in label_of), dtype=np.int64)
    return rows, np.fromiter((label_of[dataset.paths[i]] for i in rows), dtype=np.int64, count=len(rows))
