"""Cheap per-sample image features: downsampled, standardised pixels.

Used where a method needs *some* description of each image without a neural network, e.g. the
instance-dependent noise generator (Xia et al. feed it normalised pixels).
"""
from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from .dataset import Dataset
from .images import ImageLoadError, load_image

logger = logging.getLogger(__name__)


def pixel_features(dataset: Dataset, *, size: int = 8) -> np.ndarray:
    """(N, size * size * 3) float32 pixels, downsampled and standardised per dimension.

    File-backed samples are decoded with :func:`load_image`; a file that fails to decode gets a row
    of zeros (the mean), so it never stops the caller.
    """
    if dataset.images is not None:
        small = np.stack([_resize(Image.fromarray(img), size) for img in dataset.images])
    else:
        small = np.zeros((len(dataset), size, size, 3), dtype=np.float32)
        for i in range(len(dataset)):
            try:
                small[i] = _resize(load_image(dataset.abspath(i)), size)
            except ImageLoadError as exc:
                logger.info("pixel features: %s", exc)
    flat = small.reshape(len(dataset), -1).astype(np.float32)
    flat -= flat.mean(axis=0, keepdims=True)
    std = flat.std(axis=0, keepdims=True)
    return flat / np.where(std > 0, std, 1.0)


def _resize(image: Image.Image, size: int) -> np.ndarray:
    small = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0
