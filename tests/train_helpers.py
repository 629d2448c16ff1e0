"""Synthetic data for the training tests: Gaussian blobs with 40% symmetric label noise."""
import numpy as np
import pandas as pd

from clipcleaner_core.data.dataset import Dataset


def blobs(n=600, k=4, d=16, noise=0.4, seed=0, images=False):
    """(dataset, features, oracle selection table): the clean set is the unflipped samples."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    centers = rng.normal(0, 1.5, (k, d))
    features = (centers[true] + rng.normal(0, 1, (n, d))).astype(np.float32)
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    pixels = None
    if images:
        pixels = np.zeros((n, 32, 32, 3), dtype=np.uint8)
        for i, c in enumerate(true):
            pixels[i, :, :, c % 3] = 60 + 60 * (c // 3) + rng.integers(0, 40)
    dataset = Dataset(name="blobs", kind="manifest", root=".", class_names=[f"c{i}" for i in range(k)],
                      labels=given, paths=[f"s{i}" for i in range(n)], true_labels=true, images=pixels)
    table = pd.DataFrame({"index": np.arange(n), "is_clean": given == true, "given_label": given,
                          "final_label": given})
    return dataset, features, table
