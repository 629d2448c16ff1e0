"""ANIMAL-10N (Song et al., ICML 2019): ``training/`` and ``testing/`` folders of ``<label>_<id>.jpg``.

The label is the number before the first underscore (0..9); it is the dataset's own, human-made
noisy label (about 8 % wrong) and there is no ground truth, so ``true_labels`` stays None.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .images import is_image_file

logger = logging.getLogger(__name__)

ANIMAL10N_CLASSES = ("cat", "lynx", "wolf", "coyote", "cheetah",
                     "jaguar", "chimpanzee", "orangutan", "hamster", "guinea pig")
SPLIT_FOLDERS = {"train": "training", "test": "testing"}


def is_animal10n(root: str | os.PathLike) -> bool:
    """True when ``root`` holds training/ and testing/ folders whose first image is ``<digit>_...``."""
    root = Path(root)
    if not all((root / name).is_dir() for name in SPLIT_FOLDERS.values()):
        return False
    with os.scandir(root / "training") as entries:
        for entry in entries:
            if entry.is_file() and is_image_file(entry.name) and not entry.name.startswith("."):
                return entry.name.split("_", 1)[0].isdecimal()
    return False


def load_animal10n(root: str | os.PathLike, *, split: str = "train") -> Dataset:
    """Load one split of ANIMAL-10N; file names are sorted, so the sample order is stable.

    A file whose name does not start with a label 0..9 and an underscore raises DataError naming it.
    """
    if split not in SPLIT_FOLDERS:
        raise DataError(f"ANIMAL-10N split {split!r} does not exist; use 'train' or 'test'")
    root = Path(root).expanduser()
    folder = root / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise DataError(f"{root} is not an ANIMAL-10N folder: {folder.name}/ is missing; point at the "
                        "folder holding training/ and testing/")
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries
                       if not e.name.startswith(".") and is_image_file(e.name) and e.is_file())
    if not names:
        raise DataError(f"no images in {folder}; ANIMAL-10N images are named <label>_<id>.jpg")
    labels = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        prefix, sep, _ = name.partition("_")
        if not sep or not prefix.isdecimal() or int(prefix) >= len(ANIMAL10N_CLASSES):
            raise DataError(f"ANIMAL-10N file {folder / name}: the name must start with its label "
                            f"0..9 and an underscore (<label>_<id>.jpg); rename or remove the file")
        labels[i] = int(prefix)
    logger.info("ANIMAL-10N %s: %d images", split, len(names))
    return Dataset(name=f"animal10n-{split}", kind="animal10n", root=folder,
                   class_names=ANIMAL10N_CLASSES, labels=labels, paths=tuple(names), split=split,
                   spec=str(root))
