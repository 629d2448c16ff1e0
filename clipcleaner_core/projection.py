"""2-D map of the image features for the UI: PCA pre-reduction, UMAP, caching, display sampling.

``compute_umap`` is the only expensive call (tens of seconds at 50k samples, plus about a minute of
numba compilation the first time in a process); its result is cached on disk under
``<cache>/umap/<cache_key>-<params hash>.npy`` so it runs once per (features, parameters).
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from clipcleaner_core import __version__
from clipcleaner_core.atomic import hash_json, read_sidecar, save_npy, write_sidecar
from clipcleaner_core.errors import ConfigError, DataError
from clipcleaner_core.paths import cache_dir

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, "float | None"], None]
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_ALGORITHM_VERSION = 1


def compute_umap(
    features: np.ndarray,
    *,
    cache_key: str,
    cache_root: str | Path | None = None,
    pca_dims: int = 50,
    seed: int | None = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    progress: Progress | None = None,
) -> np.ndarray:
    """Embed ``features`` in 2-D with UMAP, cached on disk.

    Args:
        features: (N, D) float array, one row per sample (e.g. L2-normalised CLIP features).
        cache_key: names the features (e.g. the embedding key plus a hash of the row selection);
            letters, digits, ``.``, ``_`` and ``-`` only. Parameters are added to it automatically.
        cache_root: cache folder (default :func:`clipcleaner_core.paths.cache_dir`).
        pca_dims: when D > pca_dims, PCA (seeded) reduces to this many dimensions first.
        seed: random state for PCA and UMAP: seeded UMAP runs on one thread and repeats exactly;
            ``None`` runs it on every core, ~1.8x faster on 2 cores (more on larger machines),
            but two runs differ slightly (the cache makes one run serve every later visit).
        n_neighbors, min_dist: UMAP parameters.
        progress: optional ``progress(stage, done, total, rate)``; stages "pca", "umap", "done".

    Returns:
        (N, 2) float32 coordinates. With N < n_neighbors + 2 UMAP is not meaningful, so the map is
        the first two principal components instead (zeros where there are fewer than 2 samples).
    """
    features = _validated_features(features)
    _check_options(cache_key, pca_dims, n_neighbors, min_dist)
    params = {"n": int(features.shape[0]), "d": int(features.shape[1]), "pca_dims": int(pca_dims),
              "seed": None if seed is None else int(seed), "n_neighbors": int(n_neighbors), "min_dist": float(min_dist),
              "algorithm": _ALGORITHM_VERSION}
    path = umap_cache_path(cache_key, params, cache_root=cache_root)
    cached = _load_cached(path, features.shape[0])
    if cached is not None:
        _report(progress, "done", 3, 3)
        return cached
    started = time.perf_counter()
    coords = _compute(features, params, progress)
    save_npy(path, coords)
    write_sidecar(path, {"cache_key": cache_key, "params": params, "seconds": time.perf_counter() - started,
                         "method": "pca" if _too_few(params) else "umap", "clipcleaner": __version__})
    _report(progress, "done", 3, 3)
    return coords


def umap_cache_path(cache_key: str, params: dict, *, cache_root: str | Path | None = None) -> Path:
    """Where the map for ``cache_key`` and ``params`` is stored."""
    root = Path(cache_root) if cache_root is not None else cache_dir()
    return root / "umap" / f"{cache_key}-{hash_json(params)[:12]}.npy"


def display_sample(n: int, *, max_points: int = 100_000, seed: int = 0) -> np.ndarray:
    """Indices of the points to draw: all of ``range(n)`` when n <= max_points, else a seeded
    uniform random subset of ``max_points`` of them. Sorted ascending, int64."""
    if n < 0 or max_points < 1:
        raise ConfigError(f"display_sample: need n >= 0 and max_points >= 1, got n={n}, max_points={max_points}")
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(n, size=max_points, replace=False)
    return np.sort(chosen).astype(np.int64)


def _compute(features: np.ndarray, params: dict, progress: Progress | None) -> np.ndarray:
    if _too_few(params):
        log.info("UMAP needs at least n_neighbors + 2 samples; using PCA for %d samples", params["n"])
        _report(progress, "pca", 0, 3)
        return _pca(features, 2, params["seed"])
    _report(progress, "pca", 0, 3)
    reduced = _pca(features, params["pca_dims"], params["seed"]) if params["d"] > params["pca_dims"] else features
    _report(progress, "umap", 1, 3)
    import umap  # imported here: importing umap-learn compiles numba code (slow)

    reducer = umap.UMAP(n_components=2, n_neighbors=params["n_neighbors"], min_dist=params["min_dist"],
                        random_state=params["seed"], n_jobs=1 if params["seed"] is not None else -1)
    coords = reducer.fit_transform(reduced)
    return np.ascontiguousarray(coords, dtype=np.float32)


def _pca(features: np.ndarray, dims: int, seed: int | None) -> np.ndarray:
    """First ``dims`` principal components, zero-padded when there are fewer (float32); seeded
    (0 when ``seed`` is None), so only UMAP's own parallel steps can vary between runs."""
    n, d = features.shape
    out = np.zeros((n, dims), dtype=np.float32)
    usable = min(dims, n, d)
    if n < 2 or usable < 1:
        return out
    from sklearn.decomposition import PCA

    out[:, :usable] = PCA(n_components=usable, random_state=0 if seed is None else seed).fit_transform(features)
    return out


def _too_few(params: dict) -> bool:
    return params["n"] < params["n_neighbors"] + 2


def _load_cached(path: Path, n: int) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable UMAP cache %s (%s)", path, exc)
        return None
    if coords.shape != (n, 2) or not read_sidecar(path):
        log.warning("ignoring UMAP cache %s: shape %s, expected (%d, 2)", path, coords.shape, n)
        return None
    return coords.astype(np.float32, copy=False)


def _validated_features(features) -> np.ndarray:
    array = np.asarray(features, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] < 1:
        raise DataError(f"compute_umap: features must be a 2-D (N, D) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise DataError(f"compute_umap: row {bad} of the features is not finite (NaN or inf); "
                        "drop rows whose image failed to load before projecting")
    return array


def _check_options(cache_key: str, pca_dims: int, n_neighbors: int, min_dist: float) -> None:
    if not isinstance(cache_key, str) or not _KEY_PATTERN.match(cache_key):
        raise ConfigError(f"compute_umap: cache_key {cache_key!r} must be 1-200 letters, digits, '.', '_' "
                         "or '-' (e.g. a content hash)")
    if pca_dims < 2 or n_neighbors < 2 or not 0.0 <= min_dist <= 1.0:
        raise ConfigError(f"compute_umap: need pca_dims >= 2, n_neighbors >= 2 and 0 <= min_dist <= 1, "
                         f"got {pca_dims}, {n_neighbors}, {min_dist}")


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total, None)
