"""Synthetic label noise for benchmarking with ground truth (DESIGN section 4).

Array-level generators take true labels (N,) int and return noisy labels (N,) int64; every one is
seeded. :func:`apply_noise` wraps them for a :class:`Dataset`: the labels it started from become
``true_labels``, the noisy labels are saved under the cache (never in the dataset's folder) so a run
can be reproduced exactly, and ``dataset.noise`` records the spec and the
effective flip rate (fraction of samples whose label actually changed).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_json
from ..errors import DataError
from ..paths import cache_dir
from .dataset import Dataset
from .idn_files import is_label_pair_csv, read_label_pair_csv

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
ASYM_CIFAR10_PAIRS = (("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"),
                      ("cat", "dog"), ("dog", "cat"))
"""Source -> target class of the CIFAR-10 asymmetric noise model."""

NOISE_MODES = {
    "sym": "symmetric: a fraction `rate` of samples get a label drawn uniformly from all K classes",
    "asym": "asymmetric CIFAR-10: truck->automobile, bird->airplane, deer->horse, cat<->dog",
    "idn": "instance-dependent (Xia et al. 2020, part-dependent), mean flip rate `rate`",
    "file": "noisy labels read from a file (CSV clean,noisy / .npy / .json list)",
}


@dataclass(frozen=True)
class NoiseSpec:
    """Which noise to apply. ``rate`` in [0, 1]; ``path`` is required for mode "file"."""

    mode: str
    rate: float = 0.0
    seed: int = 0
    path: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in NOISE_MODES:
            raise DataError(f"unknown noise mode {self.mode!r}; use one of {', '.join(NOISE_MODES)}")
        if not 0.0 <= float(self.rate) <= 1.0:
            raise DataError(f"noise rate {self.rate!r} is outside [0, 1]; give a fraction such as 0.4")
        if self.mode == "file" and not self.path:
            raise DataError("noise mode 'file' needs a path: write it as 'file:<path to labels>'")
        object.__setattr__(self, "rate", float(self.rate))
        object.__setattr__(self, "seed", int(self.seed))

    def file_name(self, split: str = "train") -> str:
        suffix = "" if split == "train" else f"-{split}"
        return f"noise-{self.mode}-{self.rate:g}-{self.seed}{suffix}.json"


def parse_noise_spec(text: str) -> NoiseSpec | None:
    """Parse ``"sym:0.4"``, ``"asym:0.2:seed"``, ``"idn:0.3:1"`` or ``"file:<path>"``; "none" -> None.

    Examples
    --------
    >>> from clipcleaner_core.data import parse_noise_spec
    >>> parse_noise_spec("sym:0.4"), parse_noise_spec("none")
    (NoiseSpec(mode='sym', rate=0.4, seed=0, path=None), None)
    """
    text = (text or "").strip()
    if text.lower() in {"", "none", "off", "clean"}:
        return None
    mode, _, rest = text.partition(":")
    mode = mode.strip().lower()
    if mode == "file":
        return NoiseSpec("file", 0.0, 0, rest.strip())
    parts = [p.strip() for p in rest.split(":")] if rest else []
    try:
        rate = float(parts[0]) if parts else 0.0
        seed = int(parts[1].removeprefix("seed=")) if len(parts) > 1 else 0
    except ValueError:
        raise DataError(
            f"cannot read noise spec {text!r}; write it as mode:rate[:seed], e.g. sym:0.4 or asym:0.2:1"
        ) from None
    if len(parts) > 2:
        raise DataError(f"noise spec {text!r} has too many parts; write it as mode:rate[:seed]")
    return NoiseSpec(mode, rate, seed)


def flip_rate(true: np.ndarray, noisy: np.ndarray) -> float:
    """Fraction of samples whose noisy label differs from the true label.

    Examples
    --------
    >>> from clipcleaner_core.data import flip_rate
    >>> flip_rate([0, 1, 2, 3], [0, 1, 2, 0])
    0.25
    """
    true, noisy = np.asarray(true), np.asarray(noisy)
    return float(np.mean(true != noisy)) if len(true) else 0.0


def symmetric_noise(true: np.ndarray, num_classes: int, rate: float, *, seed: int = 0) -> np.ndarray:
    """Pick round(rate * N) samples uniformly and give each a label drawn uniformly from all K classes.

    The new label may equal the true one, so the effective flip rate is about rate * (K - 1) / K.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.data import flip_rate, symmetric_noise
    >>> true = np.repeat(np.arange(10), 100)
    >>> noisy = symmetric_noise(true, 10, 0.5, seed=0)
    >>> round(flip_rate(true, noisy), 2)  # about 0.5 x 9/10: a new label may equal the old one
    0.46
    """
    true = _check_labels(true, num_classes)
    rng = np.random.default_rng(seed)
    noisy = true.copy()
    chosen = rng.choice(len(true), size=int(round(rate * len(true))), replace=False)
    noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
    return noisy


def asymmetric_cifar10_noise(true: np.ndarray, rate: float, *, seed: int = 0,
                             class_names=CIFAR10_CLASSES) -> np.ndarray:
    """Flip round(rate * n_c) samples of each source class c to its CIFAR-10 look-alike.

    truck->automobile, bird->airplane, deer->horse, cat->dog, dog->cat; other classes never change.
    ``class_names`` gives the dataset's class order (matched case-insensitively to CIFAR-10's).

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.data import asymmetric_cifar10_noise
    >>> true = np.repeat(np.arange(10), 10)  # CIFAR-10 order: 9 = truck, 1 = automobile
    >>> noisy = asymmetric_cifar10_noise(true, 0.4, seed=0)
    >>> sorted(set(noisy[true == 9].tolist())), int((noisy[true == 9] == 1).sum())
    ([1, 9], 4)
    """
    names = [str(c).strip().lower() for c in class_names]
    missing = sorted(set(CIFAR10_CLASSES) - set(names))
    if missing:
        raise DataError(
            f"asymmetric noise is defined for the CIFAR-10 classes, but this dataset lacks "
            f"{', '.join(missing)}; use symmetric (sym) or instance-dependent (idn) noise instead"
        )
    true = _check_labels(true, len(names))
    rng = np.random.default_rng(seed)
    noisy = true.copy()
    for source, target in ASYM_CIFAR10_PAIRS:
        members = np.flatnonzero(true == names.index(source))
        chosen = rng.choice(members, size=int(round(rate * len(members))), replace=False)
        noisy[chosen] = names.index(target)
    return noisy


def instance_dependent_noise(true: np.ndarray, features: np.ndarray, num_classes: int,
                             rate: float, *, seed: int = 0) -> np.ndarray:
    """Part-dependent noise of Xia et al. (NeurIPS 2020).

    Each sample's flip rate q_i is drawn from a normal around ``rate`` (std 0.1) truncated to
    [0, 1]; a random projection W_y ~ N(0, 1) of shape (D, K) per true class y scores the sample's
    features x_i (N, D), the true class is masked out, and the flip goes to class k with
    probability q_i * softmax(x_i W_y)_k. The label stays with probability 1 - q_i.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.data import flip_rate, instance_dependent_noise
    >>> rng = np.random.default_rng(0)
    >>> true, features = rng.integers(0, 5, 1000), rng.normal(size=(1000, 16))
    >>> noisy = instance_dependent_noise(true, features, 5, 0.3, seed=0)
    >>> bool(0.2 < flip_rate(true, noisy) < 0.4)
    True
    """
    from scipy import stats

    true = _check_labels(true, num_classes)
    features = np.asarray(features, dtype=np.float64).reshape(len(true), -1)
    rng = np.random.default_rng(seed)
    std = 0.1
    low, high = (0.0 - rate) / std, (1.0 - rate) / std
    flip_prob = stats.truncnorm(low, high, loc=rate, scale=std).rvs(len(true), random_state=rng)
    projection = rng.standard_normal((num_classes, features.shape[1], num_classes))
    logits = np.empty((len(true), num_classes))
    for label in range(num_classes):
        rows = true == label
        logits[rows] = features[rows] @ projection[label]
    logits[np.arange(len(true)), true] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs *= (flip_prob / probs.sum(axis=1))[:, None]
    probs[np.arange(len(true)), true] = 1.0 - flip_prob
    draws = rng.random(len(true))[:, None]
    noisy = (draws > np.cumsum(probs, axis=1)).sum(axis=1)
    return np.minimum(noisy, num_classes - 1).astype(np.int64)


def noise_from_file(path: str | os.PathLike, *, class_names=None) -> tuple[np.ndarray | None, np.ndarray]:
    """Read (clean or None, noisy) labels from a CSV with columns clean,noisy, a .npy array, or a JSON
    list / object with "noisy_labels" (and optionally "clean_labels"). Labels are ints or class names.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from clipcleaner_core.data import noise_from_file
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = path.write_text(chr(10).join(["clean,noisy", "cat,cat", "dog,cat"]))
    >>> clean, noisy = noise_from_file(path, class_names=["cat", "dog"])
    >>> clean.tolist(), noisy.tolist()
    ([0, 1], [0, 0])
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"noise file {path} not found; give a CSV (clean,noisy), .npy or .json of labels")
    suffix = path.suffix.lower()
    clean = None
    try:
        if suffix == ".npy":
            noisy = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            payload = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(payload, dict):
                noisy, clean = payload.get("noisy_labels"), payload.get("clean_labels")
            else:
                noisy = payload
        elif suffix == ".csv" and is_label_pair_csv(path):  # the paper's CIFAR-10 IDN files
            clean, noisy = read_label_pair_csv(path)
        elif suffix == ".csv":
            import pandas as pd

            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if "noisy" not in table.columns:
                raise DataError(f"noise file {path} has no 'noisy' column; it needs columns clean,noisy")
            noisy = table["noisy"].tolist()
            clean = table["clean"].tolist() if "clean" in table.columns else None
        else:
            raise DataError(f"noise file {path} must be .csv (clean,noisy), .npy or .json")
    except (ValueError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read noise file {path}: {exc}") from None
    if noisy is None:
        raise DataError(f"noise file {path} has no 'noisy_labels' entry")
    noisy_ids = _label_ids(noisy, class_names, path, "noisy")
    return (None if clean is None else _label_ids(clean, class_names, path, "clean")), noisy_ids


def save_noise(labels: np.ndarray, spec: NoiseSpec, path: str | os.PathLike, *,
               clean: np.ndarray | None = None) -> Path:
    """Write noisy labels (and the clean ones, if given) with the spec as JSON, atomically.

    Examples
    --------
    >>> import json, pathlib, tempfile
    >>> from clipcleaner_core.data import NoiseSpec, save_noise
    >>> path = save_noise([0, 0, 1], NoiseSpec("sym", 0.3, 1), pathlib.Path(tempfile.mkdtemp()) / "noise.json",
    ...                   clean=[0, 1, 1])
    >>> saved = json.loads(path.read_text())
    >>> saved["noisy_labels"], round(saved["flip_rate"], 3)
    ([0, 0, 1], 0.333)
    """
    payload = {"mode": spec.mode, "rate": spec.rate, "seed": spec.seed,
               "noisy_labels": np.asarray(labels, dtype=np.int64).tolist()}
    if clean is not None:
        payload["clean_labels"] = np.asarray(clean, dtype=np.int64).tolist()
        payload["flip_rate"] = flip_rate(clean, labels)
    return write_json(path, payload)


def apply_noise(dataset: Dataset, spec: NoiseSpec | str, *, features: np.ndarray | None = None,
                save_dir: str | os.PathLike | None = None) -> Dataset:
    """Return ``dataset`` with noisy labels; the labels it started from become ``true_labels``.

    If the dataset already has true labels, noise is applied to those. ``features`` (N, D) feed the
    instance-dependent generator (default: downsampled pixels). The noisy labels are saved as
    ``noise-<mode>-<rate>-<seed>.json`` in ``save_dir``, else under the cache (:func:`noise_dir`;
    never in the dataset's folder); ``dataset.noise["path"]`` records where.

    Examples
    --------
    >>> import tempfile
    >>> from clipcleaner_core.data import apply_noise, load_demo
    >>> noisy = apply_noise(load_demo(noise_rate=0.0), "sym:0.3:1", save_dir=tempfile.mkdtemp())
    >>> noisy.noise["mode"], round(noisy.noise["flip_rate"], 2), bool((noisy.true_labels != noisy.labels).any())
    ('sym', 0.27, True)
    """
    if isinstance(spec, str):
        spec = parse_noise_spec(spec)
        if spec is None:
            return dataset
    clean = dataset.true_labels if dataset.true_labels is not None else dataset.labels
    noisy = _generate(dataset, spec, clean, features)
    if spec.mode == "file":
        saved = Path(spec.path)
    else:
        saved = _save_noise_file(dataset, spec, noisy, clean, save_dir)
    effective = flip_rate(clean, noisy)
    rate = effective if spec.mode == "file" else spec.rate
    noise = {"mode": spec.mode, "rate": rate, "seed": spec.seed if spec.mode != "file" else None,
             "flip_rate": effective, "path": str(saved)}
    logger.info("%s noise on %s: effective flip rate %.3f, saved to %s", spec.mode, dataset.name,
                effective, saved)
    return dataset.replace(labels=noisy, true_labels=clean.copy(), noise=noise)


def _generate(dataset: Dataset, spec: NoiseSpec, clean: np.ndarray, features) -> np.ndarray:
    k = dataset.num_classes
    if spec.mode == "sym":
        return symmetric_noise(clean, k, spec.rate, seed=spec.seed)
    if spec.mode == "asym":
        return asymmetric_cifar10_noise(clean, spec.rate, seed=spec.seed, class_names=dataset.class_names)
    if spec.mode == "idn":
        if features is None:
            from .features import pixel_features

            features = pixel_features(dataset)
        return instance_dependent_noise(clean, features, k, spec.rate, seed=spec.seed)
    file_clean, noisy = noise_from_file(spec.path, class_names=dataset.class_names)
    if len(noisy) != len(clean):
        raise DataError(f"noise file {spec.path} has {len(noisy)} labels but the dataset has "
                        f"{len(clean)} samples; it was made for another dataset or split")
    if noisy.size and noisy.max() >= k:
        raise DataError(f"noise file {spec.path} has label {int(noisy.max())} but the dataset has "
                        f"only {k} classes")
    if file_clean is not None and not np.array_equal(file_clean, clean):
        row = int(np.flatnonzero(file_clean != clean)[0])
        raise DataError(f"noise file {spec.path} row {row + 1}: clean label {file_clean[row]} but the "
                        f"dataset has {clean[row]}; the file was made for another dataset or order")
    return noisy


def _save_noise_file(dataset: Dataset, spec: NoiseSpec, noisy, clean, save_dir) -> Path:
    """Save the noisy labels in ``save_dir`` if given, else under the cache (never in the dataset)."""
    name = spec.file_name(dataset.split)
    candidates = [Path(save_dir)] if save_dir is not None else []
    candidates.append(noise_dir(dataset))
    for folder in candidates:
        if _same_noise_file(folder / name, noisy):  # written by an earlier run: reuse, never rewrite
            return folder / name
        try:
            return save_noise(noisy, spec, folder / name, clean=clean)
        except OSError as exc:
            logger.warning("cannot save noise in %s (%s); trying the cache", folder, exc)
    raise DataError(f"cannot save the noisy labels anywhere; make {candidates[-1]} writable")


def _same_noise_file(path: Path, noisy) -> bool:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return saved.get("noisy_labels") == np.asarray(noisy, dtype=np.int64).tolist()


def noise_dir(dataset: Dataset) -> Path:
    """The cache folder of ``dataset``'s noise files: ``<cache>/noise/<name>-<content fingerprint>``.

    Examples
    --------
    >>> from clipcleaner_core.data import load_demo
    >>> from clipcleaner_core.data.noise import noise_dir
    >>> noise_dir(load_demo()).parent.name  # under the cache, never in the dataset's folder
    'noise'
    """
    return cache_dir() / "noise" / f"{dataset.name}-{dataset.content_fingerprint()}"


def _check_labels(true, num_classes: int) -> np.ndarray:
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    if true.size and (true.min() < 0 or true.max() >= num_classes):
        raise DataError(f"labels must lie in 0..{num_classes - 1}; found {int(true.min())}..{int(true.max())}")
    return true


def _label_ids(values, class_names, path: Path, what: str) -> np.ndarray:
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    lookup = {str(c): i for i, c in enumerate(class_names or ())}
    ids = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        text = str(value).strip()
        if text in lookup:
            ids[row] = lookup[text]
        elif text.lstrip("-").isdecimal() and int(text) >= 0:
            ids[row] = int(text)
        else:
            raise DataError(f"noise file {path}: unknown {what} label {text!r} in row {row + 1}; "
                            f"use class indices or one of the class names")
    return ids
