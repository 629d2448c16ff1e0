"""The paper's benchmark datasets as formats of :func:`~.sources.load_dataset`: one registry.

Each entry: the format name (also the ``Dataset.kind`` it loads, and the name of its presets),
a one-line description, a detector and a loader ``load(path, split=...)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

from .animal10n import is_animal10n, load_animal10n
from .clothing1m import is_clothing1m, load_clothing1m
from .red_mini_imagenet import is_red_mini_imagenet, load_red_mini_imagenet
from .webvision import is_webvision, load_webvision


class PaperFormat(NamedTuple):
    description: str
    detect: Callable[[Path], bool]
    load: Callable


PAPER_FORMATS: dict[str, PaperFormat] = {
    "animal10n": PaperFormat("ANIMAL-10N: training/ and testing/ folders of <label>_<id>.jpg",
                             is_animal10n, load_animal10n),
    "red-mini-imagenet": PaperFormat(
        "Red/Blue Mini-ImageNet: a noise list such as ROOT/split/red_noise_nl_0.4 (images in all_images/)",
        is_red_mini_imagenet, load_red_mini_imagenet),
    "webvision": PaperFormat("mini-WebVision (first 50 classes): a folder with info/train_filelist_google.txt",
                             is_webvision, load_webvision),
    "clothing1m": PaperFormat("Clothing1M: a folder with noisy_label_kv.txt and the key lists",
                              is_clothing1m, load_clothing1m),
}


def detect_paper_format(spec: str | os.PathLike) -> str | None:
    """The name of the paper format ``spec`` is in, or None."""
    path = Path(spec).expanduser()
    for name, entry in PAPER_FORMATS.items():
        if entry.detect(path):
            return name
    return None


def load_paper_dataset(kind: str, spec: str | os.PathLike, *, split: str = "train"):
    """Load ``spec`` as the paper format ``kind`` (a key of :data:`PAPER_FORMATS`)."""
    return PAPER_FORMATS[kind].load(Path(spec).expanduser(), split=split)
