"""The built-in offline demo: scikit-learn's 1,797 real handwritten digits with known label noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .dataset import Dataset
from .noise import NoiseSpec, apply_noise

DEMO_CLASSES = tuple(str(d) for d in range(10))


def load_demo(*, noise_rate: float = 0.4, seed: int = 0, size: int = 32) -> Dataset:
    """sklearn's digits upscaled to ``size`` x ``size`` RGB uint8 (in memory), with seeded symmetric noise.

    ``noise_rate`` is the symmetric-noise rate of DESIGN section 4 (a replaced label may coincide with
    the true one, so 0.4 flips about 36% of labels; ``dataset.noise["flip_rate"]`` has the exact
    figure). The clean labels are kept in ``true_labels``. ``noise_rate=0`` gives the clean digits.

    Examples
    --------
    >>> from clipcleaner_core.data import flip_rate, load_demo
    >>> demo = load_demo(noise_rate=0.2, seed=1)
    >>> len(demo), demo.images.shape[1:], round(flip_rate(demo.true_labels, demo.labels), 2)
    (1797, (32, 32, 3), 0.18)
    """
    if not 8 <= int(size) <= 512:
        raise DataError(f"demo image size {size!r} must be between 8 and 512 pixels")
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.stack([_upscale(img, int(size)) for img in pixels])
    labels = digits.target.astype(np.int64)
    dataset = Dataset(
        name="demo",
        kind="demo",
        root=Path("."),
        class_names=DEMO_CLASSES,
        labels=labels,
        paths=tuple(f"digits/{i:04d}" for i in range(len(labels))),
        images=images,
        split="train",
        spec="demo",
    )
    if noise_rate:
        dataset = apply_noise(dataset, NoiseSpec("sym", noise_rate, seed))
    return dataset


def holdout_split(n: int, *, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (train_idx, test_idx), each sorted; test has round(n * fraction).

    Examples
    --------
    >>> from clipcleaner_core.data import holdout_split
    >>> train, test = holdout_split(10, fraction=0.2, seed=0)
    >>> len(train), len(test), sorted(set(train) | set(test)) == list(range(10))
    (8, 2, True)
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"holdout fraction {fraction!r} must lie strictly between 0 and 1, e.g. 0.2")
    if n < 2:
        raise DataError(f"cannot split {n} samples into train and test; need at least 2")
    n_test = min(max(1, int(round(n * fraction))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _upscale(gray: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image.convert("RGB"))
