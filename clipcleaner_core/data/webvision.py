"""mini-WebVision (Li et al. 2017; the first 50 classes, as in the noisy-label literature).

Layout (WebVision 1.0 with the resized images, extracted unchanged)::

    ROOT/info/train_filelist_google.txt   "<relative path> <label>" (paths like google/q0001/x.jpg)
    ROOT/info/val_filelist.txt            "<file name> <label>", images in ROOT/val_images_256/
    ROOT/imagenet_val/<wnid>/*.JPEG        (optional) ImageNet validation images, one folder per
                                           WordNet id: the second test set (ILSVRC12)

Labels 0..49 are the first 50 ImageNet classes in WordNet-id order; rows with labels >= 50 are
dropped. The WebVision training labels are web-search queries: there is no ground truth.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .images import is_image_file
from .listfile import ListedDataset, read_pairs

logger = logging.getLogger(__name__)

NUM_CLASSES = 50
WEBVISION_WNIDS = (
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
    "n01514668", "n01514859", "n01518878", "n01530575", "n01531178", "n01532829", "n01534433",
    "n01537544", "n01558993", "n01560419", "n01580077", "n01582220", "n01592084", "n01601694",
    "n01608432", "n01614925", "n01616318", "n01622779", "n01629819", "n01630670", "n01631663",
    "n01632458", "n01632777", "n01641577", "n01644373", "n01644900", "n01664065", "n01665541",
    "n01667114", "n01667778", "n01669191", "n01675722", "n01677366", "n01682714", "n01685808",
    "n01687978", "n01688243", "n01689811", "n01692333", "n01693334", "n01694178", "n01695060",
    "n01697457",
)
WEBVISION_CLASSES = (
    "tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark", "electric ray",
    "stingray", "rooster", "hen", "ostrich", "brambling", "goldfinch", "house finch", "junco",
    "indigo bunting", "American robin", "bulbul", "jay", "magpie", "chickadee", "water ouzel",
    "kite", "bald eagle", "vulture", "great grey owl", "European fire salamander", "common newt",
    "eft", "spotted salamander", "axolotl", "bullfrog", "tree frog", "tailed frog",
    "loggerhead turtle", "leatherback turtle", "mud turtle", "terrapin", "box turtle",
    "banded gecko", "common iguana", "American chameleon", "whiptail lizard", "agama",
    "frilled lizard", "alligator lizard", "Gila monster", "green lizard", "African chameleon",
    "Komodo dragon", "African crocodile",
)
"""Names of the 50 classes in label order (WordNet ids in :data:`WEBVISION_WNIDS`)."""

TRAIN_LIST, VAL_LIST, VAL_IMAGES = "info/train_filelist_google.txt", "info/val_filelist.txt", "val_images_256"
IMAGENET_VAL = "imagenet_val"
_FIX = "; extract the WebVision 1.0 archive (resized images and info/) unchanged"


def is_webvision(root: str | os.PathLike) -> bool:
    return (Path(root) / TRAIN_LIST).is_file()


def load_webvision(root: str | os.PathLike, *, split: str = "train",
                   num_classes: int = NUM_CLASSES) -> ListedDataset:
    """Load mini-WebVision: "train" (Google images of the first ``num_classes`` classes) or "test"
    (the WebVision validation set of those classes)."""
    if split not in ("train", "test"):
        raise DataError(f"WebVision split {split!r} does not exist; use 'train' or 'test' "
                        "(ImageNet validation: load_imagenet_val)")
    if not 1 <= num_classes <= NUM_CLASSES:
        raise DataError(f"mini-WebVision has {NUM_CLASSES} classes; num_classes={num_classes} is out of range")
    root = Path(root).expanduser()
    listed = root / (TRAIN_LIST if split == "train" else VAL_LIST)
    if not listed.is_file():
        raise DataError(f"{root} is not a WebVision folder: {listed.relative_to(root)} is missing{_FIX}")
    names, labels = read_pairs(listed, fix=_FIX)
    keep = labels < num_classes
    prefix = "" if split == "train" else f"{VAL_IMAGES}/"
    paths = tuple(prefix + n for n, k in zip(names, keep) if k)
    if not paths:
        raise DataError(f"{listed} has no images of the first {num_classes} classes{_FIX}")
    logger.info("mini-WebVision %s: %d of %d listed images", split, len(paths), len(names))
    return ListedDataset(name=f"webvision-{split}", kind="webvision", root=root,
                         class_names=WEBVISION_CLASSES[:num_classes], labels=labels[keep], paths=paths,
                         split=split, spec=str(root), list_files=(str(listed),))


def find_imagenet_val(root: str | os.PathLike) -> Path | None:
    """``ROOT/imagenet_val`` when it exists (where the paper's code looks), else None."""
    folder = Path(root) / IMAGENET_VAL
    return folder if folder.is_dir() else None


def load_imagenet_val(folder: str | os.PathLike, *, num_classes: int = NUM_CLASSES) -> Dataset:
    """The ImageNet validation images of the mini-WebVision classes: ``folder/<wnid>/*``.

    Only the first ``num_classes`` WordNet ids are read (other folders are ignored); a missing
    class folder raises DataError naming it.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"ImageNet validation folder {folder} not found; give the folder holding one "
                        "subfolder per WordNet id (n01440764/, ...)")
    paths, labels = [], []
    for label, wnid in enumerate(WEBVISION_WNIDS[:num_classes]):
        class_dir = folder / wnid
        if not class_dir.is_dir():
            raise DataError(f"ImageNet validation folder {folder} lacks {wnid}/ ({WEBVISION_CLASSES[label]}); "
                            "sort the validation images into one folder per WordNet id")
        with os.scandir(class_dir) as entries:
            names = sorted(e.name for e in entries if is_image_file(e.name) and not e.name.startswith("."))
        paths.extend(f"{wnid}/{n}" for n in names)
        labels.extend([label] * len(names))
    if not paths:
        raise DataError(f"no images under the class folders of {folder}")
    return Dataset(name="imagenet-val-50", kind="imagefolder", root=folder,
                   class_names=WEBVISION_CLASSES[:num_classes], labels=np.asarray(labels, dtype=np.int64),
                   paths=tuple(paths), split="test", spec=str(folder))
