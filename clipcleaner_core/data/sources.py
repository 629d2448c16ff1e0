"""Where datasets come from: ImageFolder trees, CSV/Parquet manifests, CIFAR folders and the demo.

``load_dataset(spec)`` is the one entry point the app, the CLI and the pipeline use; it detects the
kind from ``spec`` unless ``format`` says otherwise.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from .cifar import CIFAR10_FOLDER, CIFAR100_FOLDER, cifar_variant, load_cifar
from .dataset import BAD_FILE_COLUMNS, Dataset
from .embeddings import is_embeddings_folder, load_embeddings_dataset
from .images import IMAGE_EXTENSIONS, is_image_file
from .manifest import MANIFEST_SUFFIXES, load_manifest
from .paper import PAPER_FORMATS, detect_paper_format, load_paper_dataset
from .screen import screen_files

logger = logging.getLogger(__name__)

FORMATS = {
    "imagefolder": "a folder with one subfolder of images per class",
    "manifest": "a CSV or Parquet file with columns path,label (+ optional true_label, split)",
    "cifar10": f"a CIFAR-10 python-version folder ({CIFAR10_FOLDER})",
    "cifar100": f"a CIFAR-100 python-version folder ({CIFAR100_FOLDER})",
    "demo": "the built-in offline demo (scikit-learn digits with 40% symmetric noise)",
    "embeddings": "precomputed embeddings: features.npy + labels (or clip-retrieval's img_emb/ + metadata/)",
    **{name: entry.description for name, entry in PAPER_FORMATS.items()},
}
SPLITS = ("train", "test")
_SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "val", "valid", "validation")}
SKIP_DIRS = frozenset({"__MACOSX"})
"""Folder names never read as data (macOS archive metadata); uploads skip them too."""


def detect_format(spec: str | os.PathLike) -> str:
    """Return the format name of ``spec``: "demo", "manifest", "cifar10", "cifar100" or "imagefolder".

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from clipcleaner_core.data import detect_format
    >>> manifest = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = manifest.write_text("path,label")
    >>> detect_format("demo"), detect_format(manifest)
    ('demo', 'manifest')
    """
    if str(spec).strip().lower() == "demo":
        return "demo"
    path = Path(spec).expanduser()
    if path.exists() and (paper_format := detect_paper_format(path)):
        return paper_format
    if is_embeddings_folder(path):
        return "embeddings"
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        raise DataError(f"{path} is a file but not a manifest; give a .csv or .parquet manifest, "
                        f"or the folder that holds the images")
    if not path.is_dir():
        raise DataError(f"dataset {str(spec)!r} not found; give an existing folder, a manifest file "
                        f"or 'demo'")
    return cifar_variant(path) or "imagefolder"


def load_dataset(spec: str | os.PathLike, *, format: str | None = None, split: str = "train") -> Dataset:
    """Load the dataset named by ``spec`` ("demo" or a path) as a :class:`Dataset`.

    ``format`` overrides detection (one of :data:`FORMATS`); ``split`` is "train" or "test" (CIFAR
    files, an ImageFolder with train/ and test/ (or val/) subfolders, or a manifest's split column).
    Raises DataError with a one-line message naming the bad file, row or value and the fix.

    Examples
    --------
    >>> from clipcleaner_core.data import load_dataset
    >>> demo = load_dataset("demo")  # 8x8 digits with seeded label noise, bundled: no download
    >>> len(demo), demo.num_classes, demo.true_labels[:5].tolist(), demo.labels[:5].tolist()
    (1797, 10, [0, 1, 2, 3, 4], [7, 1, 2, 7, 4])
    >>> load_dataset("demo", format="excel")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.ConfigError: unknown dataset format 'excel'; use one of ...
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}")
    kind = format or detect_format(spec)
    if kind == "demo":
        from .demo import load_demo

        if split != "train":
            raise DataError("the demo has one split; hold out test samples with holdout_split(len(dataset))")
        return load_demo()
    path = Path(spec).expanduser()
    if kind == "manifest":
        dataset = load_manifest(path, split=split)
    elif kind in ("cifar10", "cifar100"):
        dataset = load_cifar(path, split=split, variant=kind)
    elif kind == "embeddings":
        dataset = load_embeddings_dataset(path, split=split)
    elif kind in PAPER_FORMATS:
        dataset = load_paper_dataset(kind, path, split=split)
    else:
        dataset = load_imagefolder(path, split=split)
    return dataset.replace(spec=str(spec))


def load_imagefolder(root: str | os.PathLike, *, split: str = "train") -> Dataset:
    """One subfolder per class (sorted names = class order), images found recursively inside each.

    Extensions are matched case-insensitively. If ``root`` holds only split folders (train/, test/ or
    val/), the one for ``split`` is used. Every file or folder passed over is listed in ``bad_files``
    with its reason: unreadable folders (permissions, a path longer than the system allows), names
    that are not valid UTF-8, hidden files and folders inside class folders, SVG and other non-image
    files, linked sub-folders, and images lying outside every class folder.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name, colour in [("cat/a.png", "red"), ("cat/b.png", "red"), ("dog/c.png", "blue")]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.new("RGB", (8, 8), colour).save(root / name)
    >>> from clipcleaner_core.data import load_imagefolder
    >>> dataset = load_imagefolder(root)
    >>> dataset.class_names, dataset.labels.tolist()
    (('cat', 'dog'), [0, 0, 1])
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} not found; give the folder holding one subfolder per class")
    folder = _split_folder(root, split)
    passed_over_classes: list[tuple[str, str]] = []
    class_dirs = _subfolders(folder, passed_over_classes)
    if not class_dirs:
        raise DataError(f"folder {folder} has no class subfolders; put each class's images in its own "
                        f"subfolder ({folder / 'cat' / '0001.jpg'}) or use a CSV manifest")
    rel_paths, labels, passed_over = [], [], passed_over_classes + _loose_images(folder)
    for label, class_dir in enumerate(class_dirs):
        for rel in _image_files(class_dir, folder, passed_over):
            rel_paths.append(rel)
            labels.append(label)
    if not rel_paths:
        shown = ", ".join(sorted(IMAGE_EXTENSIONS)[:8])
        skipped = (f"; {len(passed_over)} passed over, first {passed_over[0][0]}: {passed_over[0][1]}"
                   if passed_over else "")
        raise DataError(f"empty dataset: no images under the class subfolders of {folder} (looked for "
                        f"{shown}, ...){skipped}; add images or point at another folder")
    keep, bad_files = screen_files(folder, rel_paths)
    if passed_over:
        skipped = pd.DataFrame(passed_over, columns=list(BAD_FILE_COLUMNS)).astype("object")
        bad_files = pd.concat([skipped, bad_files], ignore_index=True)
    if not keep.size:
        raise DataError(f"no readable images under {folder}: all {len(rel_paths)} files are bad "
                        f"(first: {bad_files.iloc[0]['path']}: {bad_files.iloc[0]['reason']})")
    name = root.name if folder == root else f"{root.name}-{split}"
    logger.info("image folder %s: %d images in %d classes, %d skipped", folder, keep.size,
                len(class_dirs), len(bad_files))
    return Dataset(name=name, kind="imagefolder", root=folder,
                   class_names=tuple(d.name for d in class_dirs),
                   labels=np.asarray(labels, dtype=np.int64)[keep],
                   paths=tuple(rel_paths[i] for i in keep), split=split, bad_files=bad_files,
                   spec=str(root))


def _split_folder(root: Path, split: str) -> Path:
    subfolders = {d.name.lower(): d for d in _subfolders(root)}
    every_split = {name for names in _SPLIT_FOLDERS.values() for name in names}
    if not subfolders or not set(subfolders) <= every_split:
        return root
    for name in _SPLIT_FOLDERS[split]:
        if name in subfolders:
            return subfolders[name]
    raise DataError(f"folder {root} has split folders {', '.join(sorted(subfolders))} but none for "
                    f"split {split!r}; add one or choose another split")


def _subfolders(folder: Path, passed_over: list | None = None) -> list[Path]:
    """Class folders of ``folder``, sorted; unusable ones go to ``passed_over`` with a reason."""
    try:
        entries = sorted(folder.iterdir(), key=lambda d: d.name)
    except OSError as exc:
        raise DataError(f"cannot read the folder {folder} ({exc.strerror or exc}); check its "
                        "permissions") from None
    found = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith(".") or entry.name in SKIP_DIRS:
            continue
        if not _is_utf8(entry.name):
            if passed_over is not None:
                passed_over.append((_shown(entry.name) + "/", _NOT_UTF8 + "; its images are left out"))
            continue
        found.append(entry)
    return found


_NOT_UTF8 = "name is not valid UTF-8 (the bytes shown as \\x..); rename it to use it"
SVG_EXTENSIONS = frozenset({".svg", ".svgz"})


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates (surrogateescape)
        return False
    return True


def _shown(rel: str) -> str:
    """A printable form of a path whose bytes are not UTF-8 (undecodable bytes as \\xNN)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _loose_images(folder: Path) -> list[tuple[str, str]]:
    """Image files lying directly in the dataset folder, outside every class folder."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
    except OSError:
        return []
    return [(_shown(n), "image outside every class folder: it has no label; move it into one")
            for n in names if is_image_file(n)]


def _image_files(class_dir: Path, root: Path, passed_over: list) -> list[str]:
    """Image paths under ``class_dir`` (relative to ``root``, sorted); every file or folder passed
    over is appended to ``passed_over`` as (path, reason)."""
    found = []

    def rel(*parts) -> str:
        return Path(os.path.relpath(os.path.join(*parts), root)).as_posix()

    def unreadable(exc: OSError) -> None:
        reason = exc.strerror or type(exc).__name__
        passed_over.append((_shown(rel(exc.filename)) + "/",
                            f"folder cannot be read ({reason}); the files in it are left out"))

    for current, dirs, files in os.walk(class_dir, onerror=unreadable):
        kept = []
        for name in sorted(dirs):
            path = os.path.join(current, name)
            reason = _skipped_folder(name, path)
            if reason:
                passed_over.append((_shown(rel(path)) + "/", reason))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            reason = _skipped_file(name)
            if reason:
                passed_over.append((_shown(rel(current, name)), reason))
            else:
                found.append(rel(current, name))
    return found


def _skipped_folder(name: str, path: str) -> str | None:
    if not _is_utf8(name):
        return "folder " + _NOT_UTF8
    if name in SKIP_DIRS:
        return "macOS archive metadata, not read"
    if name.startswith("."):
        return "hidden folder, not read"
    if os.path.islink(path):
        return "link to a folder, not followed; put the images in the class folder itself"
    return None


def _skipped_file(name: str) -> str | None:
    if not _is_utf8(name):
        return "file " + _NOT_UTF8
    if name.startswith("."):
        return "hidden file, ignored"
    suffix = Path(name).suffix.lower()
    if suffix in SVG_EXTENSIONS:
        return "SVG vector image: not decoded; convert it to PNG to use it"
    if not is_image_file(name):
        return f"not an image file (extension {suffix or 'none'})"
    return None
