"""CIFAR-10 / CIFAR-100 "python version" folders, read without unpickling arbitrary objects.

The official files are Python pickles of dicts holding numpy arrays, lists and strings. A pickle can
name any importable callable, so they are read with an unpickler that only resolves the handful of
numpy functions needed to rebuild an array; anything else (``os.system``, ``eval``...) is refused.
"""
from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset

logger = logging.getLogger(__name__)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "names": "label_names", "labels": "labels"},
    "cifar100": {"train": ["train"], "test": ["test"], "meta": "meta",
                 "names": "fine_label_names", "labels": "fine_labels"},
}
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
_FIX = "download the CIFAR 'python version' archive and extract it unchanged"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only the numpy callables needed to rebuild arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core"):  # numpy 1.x spelling used by the official files
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(path: str | Path) -> dict:
    """Read one CIFAR pickle safely; keys come back as ``str``. Raises DataError naming the file."""
    path = Path(path)
    try:
        # latin1 is how numpy documents reading Python 2 array pickles such as the official files
        payload = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR file {path} is missing; {_FIX}") from None
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"CIFAR file {path} was not loaded: {exc}, which a CIFAR file never contains; "
            f"the file may be tampered with, so {_FIX}"
        ) from None
    except Exception as exc:  # truncated or garbled pickles raise many different types
        raise DataError(f"CIFAR file {path} is unreadable ({type(exc).__name__}: {exc}); {_FIX}") from None
    if not isinstance(payload, dict):
        raise DataError(f"CIFAR file {path} holds a {type(payload).__name__}, not a dict; {_FIX}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in payload.items()}


def cifar_variant(folder: str | Path) -> str | None:
    """"cifar10" / "cifar100" when ``folder`` (or its only CIFAR subfolder) looks like one, else None."""
    folder = _cifar_folder(Path(folder))
    if (folder / "batches.meta").is_file() and (folder / "test_batch").is_file():
        return "cifar10"
    if (folder / "meta").is_file() and ((folder / "train").is_file() or (folder / "test").is_file()):
        return "cifar100"
    return None


def load_cifar(folder: str | Path, *, split: str = "train", variant: str | None = None) -> Dataset:
    """Load a CIFAR-10 or CIFAR-100 python-version folder into memory (N, 32, 32, 3) uint8.

    ``folder`` may be ``cifar-10-batches-py`` / ``cifar-100-python`` itself or the folder holding it.
    Sample ids are ``"<split>/<index:05d>"``; class names come from the meta file (fine labels for
    CIFAR-100).
    """
    if split not in ("train", "test"):
        raise DataError(f"CIFAR split {split!r} does not exist; use 'train' or 'test'")
    root = _cifar_folder(Path(folder), variant)
    detected = cifar_variant(root)
    if detected is None:
        raise DataError(f"{folder} is not a CIFAR python-version folder (no batches.meta or meta "
                        f"file); {_FIX}, or pass format='imagefolder' / 'manifest'")
    if variant is not None and variant != detected:
        raise DataError(f"{root} holds {detected}, not {variant}; pass format='{detected}' or leave "
                        f"the format to detection")
    variant = detected
    files = _FILES[variant]
    meta = read_cifar_pickle(root / files["meta"])
    class_names = tuple(_text(n) for n in meta.get(files["names"], ()))
    images, labels = [], []
    for name in files[split]:
        batch_images, batch_labels = _read_batch(root / name, files["labels"])
        images.append(batch_images)
        labels.append(batch_labels)
    images_all = np.concatenate(images)
    labels_all = np.concatenate(labels)
    if not class_names or labels_all.max() >= len(class_names):
        raise DataError(f"{root / files['meta']} lists {len(class_names)} class names but labels go up "
                        f"to {int(labels_all.max())}; {_FIX}")
    logger.info("loaded %s %s: %d images", variant, split, len(labels_all))
    return Dataset(name=f"{variant}-{split}", kind=variant, root=root, class_names=class_names,
                   labels=labels_all, paths=tuple(f"{split}/{i:05d}" for i in range(len(labels_all))),
                   images=images_all, split=split, spec=str(folder))


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    data = batch.get("data")
    labels = batch.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"CIFAR file {path} lacks 'data' or '{label_key}'; {_FIX}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"CIFAR file {path} has data {data.dtype} {data.shape} for {len(labels)} labels; "
                        f"expected uint8 (N, 3072); {_FIX}")
    if labels.size and labels.min() < 0:
        raise DataError(f"CIFAR file {path} has a negative label; {_FIX}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _cifar_folder(folder: Path, variant: str | None = None) -> Path:
    children = {"cifar10": [CIFAR10_FOLDER], "cifar100": [CIFAR100_FOLDER]}
    for child in children.get(variant, [CIFAR10_FOLDER, CIFAR100_FOLDER]):
        if (folder / child).is_dir():
            return folder / child
    return folder


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
