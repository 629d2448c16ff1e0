"""Red / Blue Mini-ImageNet of Controlled Noisy Web Labels (Jiang et al., ICML 2020).

Layout (the dataset archive extracted unchanged)::

    ROOT/split/red_noise_nl_0.4       "<image name> <label>" per line, images in ROOT/all_images/
    ROOT/split/blue_noise_nl_0.4      the same for blue (synthetic) noise
    ROOT/split/clean_validation       the clean test set, images in ROOT/all_validation/
    ROOT/mini-imagenet-annotations.json   (optional) which web images were judged wrongly labelled

The noise ratio (0.0-0.8) is chosen by naming the list: the dataset spec is the list file itself
(``ROOT/split/red_noise_nl_0.4``), or ``load_red_mini_imagenet(ROOT, color="red", ratio=0.4)``.
Blue noise keeps ImageNet images and flips labels, so its truth is the ``blue_noise_nl_0.0`` list;
red noise replaces images by web images, so only which samples are noisy is known
(:func:`red_noisy_mask`), not their true class.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .listfile import ListedDataset, read_pairs

logger = logging.getLogger(__name__)

RED_MINI_IMAGENET_CLASSES = (
    "triceratops", "upright piano", "Gordon setter", "cocktail shaker", "unicycle", "pipe organ",
    "Alaskan malamute", "prayer rug", "Newfoundland dog", "tobacco shop", "ladybug",
    "combination lock", "trash can", "American robin", "scoreboard", "dome", "iPod",
    "one-armed bandit", "miniskirt", "French bulldog", "carton", "Tibetan mastiff", "pencil box",
    "king crab", "horizontal bar", "spider web", "electric guitar", "meerkat", "file cabinet",
    "consomme", "jellyfish", "cuirass", "black-footed ferret", "school bus", "miniature poodle",
    "catamaran", "snorkel", "oboe", "worm fence", "African hunting dog", "golden retriever",
    "carousel", "aircraft carrier", "photocopier", "Arctic fox", "hair slide", "tile roof",
    "Ibizan hound", "toucan", "house finch", "poncho", "trifle", "hourglass", "fire screen",
    "white wolf", "street sign", "solar dish", "rock beauty", "komondor", "bookshop", "crate",
    "theater curtain", "army tank", "dugong", "dalmatian", "ear of corn", "missile", "bolete",
    "orange", "vase", "Walker hound", "lion", "three-toed sloth", "lipstick", "coral reef", "reel",
    "beer bottle", "green mamba", "frying pan", "wok", "goose", "rhinoceros beetle", "yawl",
    "clog", "Saluki", "chime", "stage", "boxer", "cliff", "ant", "cannon", "harvestman",
    "mixing bowl", "nematode", "parallel bars", "garbage truck", "holster", "barrel", "hotdog",
    "dishrag",
)
"""The 100 classes in label order (the order of the paper's code)."""

COLORS = ("red", "blue")
SPLIT_DIR, TRAIN_IMAGES, TEST_LIST, TEST_IMAGES = "split", "all_images", "clean_validation", "all_validation"
ANNOTATIONS = "mini-imagenet-annotations.json"
_LIST_NAME = re.compile(r"^(red|blue)_noise_nl_(\d+(?:\.\d+)?)$")
_FIX = "; extract the Controlled Noisy Web Labels archive unchanged"


def parse_list_name(path: str | os.PathLike) -> tuple[str, float] | None:
    """("red" | "blue", ratio) when ``path`` is named like ``red_noise_nl_0.4``, else None."""
    match = _LIST_NAME.match(Path(path).name)
    return (match.group(1), float(match.group(2))) if match else None


def is_red_mini_imagenet(spec: str | os.PathLike) -> bool:
    """True for a noise list file inside ``split/``, or a root holding ``split/clean_validation``."""
    path = Path(spec)
    if path.is_file():
        return parse_list_name(path) is not None and path.parent.name == SPLIT_DIR
    return (path / SPLIT_DIR / TEST_LIST).is_file() and (path / TRAIN_IMAGES).is_dir()


def available_lists(root: str | os.PathLike) -> list[str]:
    """Names of the noise lists under ``root/split`` (sorted)."""
    folder = Path(root) / SPLIT_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if parse_list_name(p))


def list_path(root: str | os.PathLike, color: str, ratio: float) -> Path:
    """The noise list for ``color`` at ``ratio`` (``0.4`` finds ``red_noise_nl_0.4``)."""
    if color not in COLORS:
        raise DataError(f"unknown Mini-ImageNet noise colour {color!r}; use red or blue")
    root = Path(root)
    for text in (f"{ratio:.1f}", f"{ratio:g}", f"{ratio:.2f}"):
        candidate = root / SPLIT_DIR / f"{color}_noise_nl_{text}"
        if candidate.is_file():
            return candidate
    shown = ", ".join(available_lists(root)) or "none"
    raise DataError(f"no {color} noise list for ratio {ratio:g} under {root / SPLIT_DIR} (found: {shown}); "
                    f"choose one of those ratios{_FIX}")


def load_red_mini_imagenet(spec: str | os.PathLike, *, split: str = "train", color: str | None = None,
                           ratio: float | None = None) -> ListedDataset:
    """Load Red/Blue Mini-ImageNet.

    ``spec`` is a noise list file (``ROOT/split/red_noise_nl_0.4``) or ROOT with ``color`` and
    ``ratio``. ``split`` "train" reads the noise list, "test" the clean validation list. Blue noise
    gets ``true_labels`` from ``blue_noise_nl_0.0``.
    """
    if split not in ("train", "test"):
        raise DataError(f"Red Mini-ImageNet split {split!r} does not exist; use 'train' or 'test'")
    path = Path(spec).expanduser()
    parsed = parse_list_name(path) if path.is_file() else None
    if parsed is not None:
        root, (color, ratio) = path.parent.parent, parsed
    else:
        root = path
        if color is None or ratio is None:
            shown = ", ".join(available_lists(root)) or "none found"
            raise DataError(f"Red Mini-ImageNet at {root}: choose the noise by giving a list file as the "
                            f"dataset, e.g. {root / SPLIT_DIR / 'red_noise_nl_0.4'} (available: {shown})")
        path = list_path(root, color, ratio)
    if not (root / SPLIT_DIR / TEST_LIST).is_file():
        raise DataError(f"{root} is not a Red Mini-ImageNet folder: {SPLIT_DIR}/{TEST_LIST} is missing{_FIX}")
    k = len(RED_MINI_IMAGENET_CLASSES)
    if split == "test":
        listed = root / SPLIT_DIR / TEST_LIST
        names, labels = read_pairs(listed, num_classes=k, fix=_FIX)
        folder, true_labels, noise = TEST_IMAGES, None, None
    else:
        listed = path
        names, labels = read_pairs(listed, num_classes=k, fix=_FIX)
        folder, noise = TRAIN_IMAGES, {"mode": color, "rate": ratio, "path": str(listed)}
        true_labels = _blue_truth(root, names) if color == "blue" else None
    if not names:
        raise DataError(f"list file {listed} is empty{_FIX}")
    logger.info("Red Mini-ImageNet %s (%s): %d images", split, listed.name, len(names))
    return ListedDataset(
        name=f"{color}-mini-imagenet-{ratio:g}" if split == "train" else "red-mini-imagenet-test",
        kind="red-mini-imagenet", root=root, class_names=RED_MINI_IMAGENET_CLASSES, labels=labels,
        paths=tuple(f"{folder}/{n}" for n in names), true_labels=true_labels, split=split,
        noise=noise, spec=str(path), list_files=(str(listed),),
    )


def _blue_truth(root: Path, names: list[str]) -> np.ndarray:
    clean_list = root / SPLIT_DIR / "blue_noise_nl_0.0"
    clean_names, clean_labels = read_pairs(clean_list, num_classes=len(RED_MINI_IMAGENET_CLASSES), fix=_FIX)
    if clean_names != names:
        raise DataError(f"{clean_list} lists other images (or another order) than the blue noise list; "
                        f"the clean labels cannot be matched{_FIX}")
    return clean_labels


def red_noisy_mask(dataset) -> np.ndarray | None:
    """(N,) bool, True for the web images judged wrongly labelled, from the annotations file.

    Returns None when ``ROOT/mini-imagenet-annotations.json`` is absent. A web image counts as
    noisy unless its annotation says it is clean.
    """
    path = Path(dataset.root) / ANNOTATIONS
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["data"]
        noisy_ids = {e[0]["image/id"] for e in entries
                     if not int(e[0].get("image/class/label/is_clean", 0))}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{path} is not the Controlled Noisy Web Labels annotation file "
                        f"({type(exc).__name__}: {exc}){_FIX}") from None
    stems = [Path(p).name.split(".", 1)[0] for p in dataset.paths]
    return np.fromiter((s in noisy_ids for s in stems), dtype=bool, count=len(stems))
