"""Neighbour evidence from the image features: a k-nearest-neighbour index, neighbour scores,
near-duplicates, outliers and similarity search.

Beyond the paper: DESIGN §2 scores each sample alone. SimiFeat (ICML 2022) votes with a sample's
nearest neighbours in a frozen embedding and LEMoN (ICML 2025) adds distances to neighbours in
image and text space; both find label errors the per-sample rule misses.

Contracts (N samples, D dimensions, k neighbours, K classes; cosine similarity of L2-normalised
features; "higher = more likely the given label is correct" unless said otherwise):

- :class:`KnnGraph`: ``indices`` (N, k) int32, each sample's k nearest *other* samples, nearest
  first; ``similarities`` (N, k) float32, their cosine similarities.
- :func:`knn_agreement`: (N,) float64 in [0, 1], higher = more likely correct: the
  similarity-weighted share of the k neighbours that carry the sample's given label.
- :func:`lemon_distance`: (N,) float64 >= 0, LOWER = more likely correct (a distance, LEMoN-style);
  the score table carries its per-class min-max normalisation ``lemon_score`` (higher = cleaner).
- :func:`outlier_scores`: ``(score, z)``: (N,) mean cosine distance to the k neighbours in
  [0, 2] (higher = farther from everything) and its robust z-score.
- :func:`find_duplicates`: ``duplicate_group`` (N,) int64 (-1 = no near-duplicate), and per
  sample whether its group mixes given labels (or train / test splits).

Search is exact (float32 matrix products over row blocks of at most ``BLOCK_BYTES``, the top k
kept per block, so memory grows with N x k, never N x N) up to ``EXACT_MAX_ROWS`` rows and
approximate above (faiss's inverted-file index; recall at k = 10 >= 0.95 against exact search,
``tests/test_neighbours.py``). :func:`neighbour_index` builds an index once per embedding and
caches it, with its kNN graph, on disk.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import atomic
from .errors import Cancelled, ConfigError, DataError

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, "float | None"], None]
METHODS = ("auto", "exact", "approximate")
#: "auto" searches exactly up to this many rows (N^2 D flops: ~10 s at 20k x 512 on 2 cores)
EXACT_MAX_ROWS = 20_000
#: float32 similarities per exact row block: rows = BLOCK_BYTES // (4 * N)
BLOCK_BYTES = 64 * 2**20
#: rows per faiss add / search call
SEARCH_CHUNK = 16_384
#: inverted lists: about 4 sqrt(N) (faiss's guideline), trained on TRAIN_PER_LIST rows per list
TRAIN_PER_LIST = 40
#: k-means iterations of the list centroids (faiss's default is 25; 10 loses no recall here)
TRAIN_ITERATIONS = 10
#: lists searched per query: recall at k = 10 >= 0.95 (measured in benchmarks/bench_neighbours.py)
N_PROBE = 32
#: similarity weights exp((s - s_nearest) / KNN_TEMPERATURE): nearer neighbours count more
KNN_TEMPERATURE = 0.07
#: LEMoN-style distance = d(image, label text) + BETA * s_n + GAMMA * s_m (LEMoN's form; fixed here)
LEMON_BETA = 1.0
LEMON_GAMMA = 1.0
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class KnnGraph:
    """Each sample's ``k`` nearest other samples: ``indices`` (N, k) int32 nearest first and
    ``similarities`` (N, k) float32 cosine similarities; ``method`` "exact" or "approximate"."""

    indices: np.ndarray
    similarities: np.ndarray
    method: str

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class NeighbourIndex:
    """Nearest-neighbour search over the rows of ``features`` (N, D) by cosine similarity.

    ``method``: "exact", "approximate" (faiss IVF-Flat) or "auto" (exact up to
    ``EXACT_MAX_ROWS`` rows). Build with :func:`neighbour_index` (cached on disk) or directly
    (in memory). :meth:`search` answers queries; :meth:`graph` is the all-samples kNN graph.
    """

    def __init__(self, features: np.ndarray, *, method: str = "auto", seed: int = 0,
                 folder: Path | None = None):
        self.features = _validate_features(features)
        self.method_ = _resolve_method(method, self.features.shape[0])
        self.seed = int(seed)
        self.folder = folder
        self._faiss = None
        self._exact = None

    def build(self, *, progress: Progress | None = None, cancel: Callable[[], bool] | None = None
              ) -> "NeighbourIndex":
        """Build (or, with a cache folder, load) the index; returns ``self``."""
        if self.method_ == "exact":
            self._exact = np.ascontiguousarray(self.features, dtype=np.float32)
            return self
        path = None if self.folder is None else self.folder / "index.faiss"
        if path is not None and _cached(path, self._meta()):
            import faiss

            self._faiss = faiss.read_index(str(path))
            return self
        self._faiss = _build_ivf(self.features, self.seed, progress, cancel)
        if path is not None:
            import faiss

            with atomic.atomic_path(path) as tmp:
                faiss.write_index(self._faiss, str(tmp))
            atomic.write_sidecar(path, self._meta())
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, similarities)``, each (M, min(k, N)), nearest first, for (M, D) queries
        (L2-normalised, e.g. image or text features of the same model)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.features.shape[1]:
            raise DataError(f"queries have dimension {queries.shape[1]} but the index has "
                            f"{self.features.shape[1]}; embed them with the same model.")
        k = min(int(k), self.features.shape[0])
        if k < 1:
            raise ConfigError(f"k={k!r} must be >= 1.")
        if self._faiss is None and self._exact is None:
            self.build()
        if self._exact is not None:
            return _exact_search(self._exact, queries, k)
        return _faiss_search(self._faiss, queries, k, self._exact_rows)

    def graph(self, k: int, *, progress: Progress | None = None,
              cancel: Callable[[], bool] | None = None) -> KnnGraph:
        """The kNN graph of all samples (self excluded), cached beside the index when it has a
        folder."""
        if int(k) != k or k < 1:
            raise ConfigError(f"k={k!r} must be a whole number >= 1.")
        n = self.features.shape[0]
        k = min(int(k), n - 1)
        if k == 0:  # a single sample has no neighbours
            return KnnGraph(np.empty((n, 0), np.int32), np.empty((n, 0), np.float32), self.method_)
        path = None if self.folder is None else self.folder / f"graph-k{k}.npz"
        if path is not None and _cached(path, self._meta()):
            with np.load(path, allow_pickle=False) as data:
                return KnnGraph(data["indices"], data["similarities"], self.method_)
        if self._faiss is None and self._exact is None:
            self.build(progress=progress, cancel=cancel)
        started = time.perf_counter()
        indices = np.empty((n, k), dtype=np.int32)
        similarities = np.empty((n, k), dtype=np.float32)
        rows = _exact_block_rows(n) if self._exact is not None else SEARCH_CHUNK
        for lo in range(0, n, rows):
            if cancel is not None and cancel():
                raise Cancelled("neighbour search cancelled")
            hi = min(n, lo + rows)
            block = np.asarray(self.features[lo:hi], dtype=np.float32)
            indices[lo:hi], similarities[lo:hi] = self._search_without_self(block, lo, k)
            elapsed = time.perf_counter() - started
            if progress is not None:
                progress("neighbours", hi, n, hi / elapsed if elapsed > 0 else None)
        graph = KnnGraph(indices, similarities, self.method_)
        if path is not None:
            with atomic.atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, indices=indices, similarities=similarities)
            atomic.write_sidecar(path, self._meta())
        log.info("kNN graph (%s, N=%d, k=%d) in %.1f s", self.method_, n, k,
                 time.perf_counter() - started)
        return graph

    def _search_without_self(self, block, start, k):
        own = np.arange(start, start + block.shape[0])
        if self._exact is not None:
            return _exact_search(self._exact, block, k, exclude=own)
        found, sims = _faiss_search(self._faiss, block, k + 1, self._exact_rows)
        return _drop_self(found, sims, own, k)

    def _exact_rows(self, rows: np.ndarray, queries: np.ndarray, k: int):
        """Exact answers for queries the approximate index returned too few results for."""
        base = np.asarray(self.features, dtype=np.float32)
        return _exact_search(base, queries, k) if rows.size else None

    def _meta(self) -> dict:
        return {"format": "clipcleaner.NeighbourIndex", "format_version": FORMAT_VERSION,
                "n": int(self.features.shape[0]), "dim": int(self.features.shape[1]),
                "method": self.method_, "seed": self.seed}


def neighbour_index(features: np.ndarray, *, key: str | None = None,
                    cache_root: str | Path | None = None, method: str = "auto", seed: int = 0,
                    progress: Progress | None = None,
                    cancel: Callable[[], bool] | None = None) -> NeighbourIndex:
    """A built :class:`NeighbourIndex` over ``features``; with ``key`` (e.g. from
    :func:`index_key`) it is cached under ``cache_root/neighbours/<key>-<method>/`` and loaded
    from there next time (atomic writes, a sidecar per file)."""
    folder = None
    if key is not None:
        from .paths import cache_dir

        root = Path(cache_root) if cache_root is not None else cache_dir()
        n = np.shape(features)[0]
        folder = root / "neighbours" / f"{key}-{_resolve_method(method, n)}"
    return NeighbourIndex(features, method=method, seed=seed, folder=folder).build(
        progress=progress, cancel=cancel)


def index_key(embedding_key: str, sample_index: np.ndarray) -> str:
    """The cache key of the index over the rows ``sample_index`` of embedding ``embedding_key``."""
    return atomic.hash_json({"embedding": embedding_key,
                             "rows": atomic.hash_array(np.asarray(sample_index, dtype=np.int64))})[:24]


def knn_graph(features: np.ndarray, *, k: int = 10, method: str = "auto", seed: int = 0,
              key: str | None = None, cache_root: str | Path | None = None,
              progress: Progress | None = None,
              cancel: Callable[[], bool] | None = None) -> KnnGraph:
    """The kNN graph of ``features`` (N, D): each row's ``k`` nearest other rows (see
    :class:`KnnGraph`); cached on disk when ``key`` is given."""
    index = neighbour_index(features, key=key, cache_root=cache_root, method=method, seed=seed,
                            progress=progress, cancel=cancel)
    return index.graph(k, progress=progress, cancel=cancel)


# ---- scores ----------------------------------------------------------------------------------
def neighbour_weights(graph: KnnGraph, *, temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """(N, k) float64 weights ``exp((s_ij - s_i1) / temperature)``: the nearest neighbour weighs
    1, farther ones less."""
    sims = graph.similarities.astype(np.float64)
    if sims.shape[1] == 0:
        return sims
    return np.exp((sims - sims[:, :1]) / temperature)


def knn_agreement(graph: KnnGraph, labels: np.ndarray, *,
                  temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """(N,) float64 in [0, 1], higher = more likely correct: the similarity-weighted share of a
    sample's k neighbours whose given label equals its own (SimiFeat-style voting). 1.0 when the
    graph has no neighbours (a single sample)."""
    labels = _check_graph_labels(graph, labels)
    if graph.k == 0:
        return np.ones(labels.size)
    weights = neighbour_weights(graph, temperature=temperature)
    same = labels[graph.indices] == labels[:, None]
    return (weights * same).sum(axis=1) / weights.sum(axis=1)


def class_text_centroids(text_features: np.ndarray, text_labels: np.ndarray, *,
                         num_classes: int) -> np.ndarray:
    """(K, D) float64: the L2-normalised mean of each class's prompt features."""
    text = np.asarray(text_features, dtype=np.float64)
    labels = np.asarray(text_labels, dtype=np.int64).ravel()
    sums = np.zeros((num_classes, text.shape[1]))
    np.add.at(sums, labels, text)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    if np.any(norms == 0):
        missing = np.flatnonzero(norms.ravel() == 0)[:10].tolist()
        raise DataError(f"classes {missing} have no prompt features; add prompts for them.")
    return sums / norms


def lemon_distance(features: np.ndarray, graph: KnnGraph, labels: np.ndarray,
                   class_text: np.ndarray, *, temperature: float = KNN_TEMPERATURE,
                   chunk_rows: int = 65_536) -> np.ndarray:
    """(N,) float64 >= 0, LOWER = more likely correct: a LEMoN-style distance for classification.

    ``d_mm + LEMON_BETA * s_n + LEMON_GAMMA * s_m`` where, with cosine distance d = 1 - cos and
    ``t_y`` the class text centroid of label y (:func:`class_text_centroids`, (K, D)):

    - ``d_mm = d(f_i, t_{y_i})``: the image against its label's text;
    - ``s_n``: over the image neighbours j, the weighted mean of ``d(t_{y_i}, t_{y_j})``
      (neighbours whose labels mean something else);
    - ``s_m``: the mean image distance to the k nearest samples carrying the same label (text
      neighbours: a label's nearest texts are its own), estimated from the kNN graph: same-label
      neighbours count at their distance, missing ones at the k-th neighbour's distance (a lower
      bound, exact when all k neighbours share the label).
    """
    labels = _check_graph_labels(graph, labels)
    class_text = np.asarray(class_text, dtype=np.float64)
    n = labels.size
    out = np.empty(n)
    text_sim = class_text @ class_text.T
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        rows = np.asarray(features[lo:hi], dtype=np.float64)
        own = labels[lo:hi]
        d_mm = 1.0 - np.einsum("ij,ij->i", rows, class_text[own])
        if graph.k == 0:
            out[lo:hi] = d_mm
            continue
        part = KnnGraph(graph.indices[lo:hi], graph.similarities[lo:hi], graph.method)
        weights = neighbour_weights(part, temperature=temperature)
        neighbour_labels = labels[part.indices]
        s_n = (weights * (1.0 - text_sim[own[:, None], neighbour_labels])).sum(1) / weights.sum(1)
        dist = 1.0 - part.similarities.astype(np.float64)
        same = neighbour_labels == own[:, None]
        s_m = np.where(same, dist, dist[:, -1:]).mean(axis=1)
        out[lo:hi] = d_mm + LEMON_BETA * s_n + LEMON_GAMMA * s_m
    return out


def outlier_scores(graph: KnnGraph, text_max_similarity: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(outlier_score, outlier_z)``, each (N,) float64.

    ``outlier_score`` in [0, 2], higher = farther from everything: the mean cosine distance to the
    k nearest neighbours. ``outlier_z``: its robust z-score ``(x - median) / (1.4826 MAD)``; with
    ``text_max_similarity`` (N,) (each image's highest cosine similarity to any class text, see
    :func:`max_text_similarity`) the larger of that and the robust z of ``-text_max_similarity``
    (an image that no class describes: zero-shot evidence). Flag ``outlier_z > theta`` (3.5).
    """
    if graph.k == 0:
        score = np.zeros(len(graph))
    else:
        score = 1.0 - graph.similarities.astype(np.float64).mean(axis=1)
    z = _robust_z(score)
    if text_max_similarity is not None:
        z = np.maximum(z, _robust_z(-np.asarray(text_max_similarity, dtype=np.float64)))
    return score, z


def max_text_similarity(features: np.ndarray, class_text: np.ndarray, *,
                        chunk_rows: int = 65_536) -> np.ndarray:
    """(N,) float64: each image's highest cosine similarity to a class text centroid (K, D),
    computed in row chunks (never the whole (N, K) matrix)."""
    n = np.shape(features)[0]
    text = np.asarray(class_text, dtype=np.float32)
    out = np.empty(n)
    for lo in range(0, n, chunk_rows):
        out[lo:lo + chunk_rows] = (np.asarray(features[lo:lo + chunk_rows], dtype=np.float32)
                                   @ text.T).max(axis=1)
    return out


def _robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    if not spread > 0:
        spread = values.std() or 1.0
    return (values - median) / spread


@dataclass(frozen=True, eq=False)
class Duplicates:
    """Near-duplicate groups. Per sample (N,): ``group`` int64 (-1 = none; groups numbered
    0..G-1 by their smallest member), ``conflicting`` bool (its group carries more than one given
    label), ``cross_split`` bool (its group spans more than one split; False without splits)."""

    group: np.ndarray
    conflicting: np.ndarray
    cross_split: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if self.group.size else 0


def find_duplicates(graph: KnnGraph, labels: np.ndarray, *, threshold: float = 0.98,
                    split: np.ndarray | None = None) -> Duplicates:
    """Groups of near-identical samples: connected components of the kNN-graph edges whose cosine
    similarity is >= ``threshold`` (in [-1, 1]). A group larger than k + 1 is still found whole
    when its members chain through their neighbours. ``split`` (N,) optional split name or id per
    sample (e.g. "train" / "test")."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = _check_graph_labels(graph, labels)
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"duplicate threshold={threshold!r} must lie in [-1, 1] (cosine).")
    n = labels.size
    group = np.full(n, -1, dtype=np.int64)
    conflicting = np.zeros(n, dtype=bool)
    cross = np.zeros(n, dtype=bool)
    rows, cols = np.nonzero(graph.similarities >= threshold)
    if rows.size == 0:
        return Duplicates(group, conflicting, cross)
    targets = graph.indices[rows, cols].astype(np.int64)
    members, local = np.unique(np.concatenate([rows, targets]), return_inverse=True)
    edges = coo_matrix((np.ones(rows.size), (local[:rows.size], local[rows.size:])),
                       shape=(members.size, members.size))
    _, component = connected_components(edges, directed=False)
    # number groups by their smallest member: members are sorted, so first appearance order
    _, first = np.unique(component, return_index=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    group[members] = rank[component]
    conflicting[members] = _mixed(rank[component], labels[members], first.size)
    if split is not None:
        split = np.asarray(split).ravel()
        if split.size != n:
            raise DataError(f"split has {split.size} entries, expected {n} (one per sample).")
        _, split_ids = np.unique(split, return_inverse=True)
        cross[members] = _mixed(rank[component], split_ids[members], first.size)
    return Duplicates(group, conflicting, cross)


def _mixed(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Per member: does its group hold more than one distinct value?"""
    lo = np.full(n_groups, np.iinfo(np.int64).max)
    hi = np.full(n_groups, np.iinfo(np.int64).min)
    np.minimum.at(lo, groups, values)
    np.maximum.at(hi, groups, values)
    return (lo != hi)[groups]


def rank_by_query(index: NeighbourIndex, query: np.ndarray, *, k: int = 100
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows most similar to ``query`` (D,) (an image feature for "more like this", or a text
    feature of the same model for a typed description), nearest first: ``(rows, similarities)``
    each (min(k, N),)."""
    query = np.asarray(query, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(query))
    if not norm > 0 or not np.isfinite(norm):
        raise DataError("the query feature is zero or not finite; embed a non-empty text or image.")
    rows, sims = index.search(query[None, :] / norm, k)
    return rows[0].astype(np.int64), sims[0]


# ---- search back ends --------------------------------------------------------------------------
def _exact_block_rows(n: int) -> int:
    return max(1, min(n, BLOCK_BYTES // (4 * max(n, 1))))


def _exact_search(base: np.ndarray, queries: np.ndarray, k: int,
                  exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of ``base`` (N, D) float32 per query by inner product, in row blocks of the
    queries so that at most ``BLOCK_BYTES`` of similarities exist at once. ``exclude`` (M,) the
    base row each query must not return (itself)."""
    n, m = base.shape[0], queries.shape[0]
    indices = np.empty((m, k), dtype=np.int32)
    sims_out = np.empty((m, k), dtype=np.float32)
    rows = _exact_block_rows(n)
    for lo in range(0, m, rows):
        hi = min(m, lo + rows)
        sims = np.asarray(queries[lo:hi], dtype=np.float32) @ base.T
        if exclude is not None:
            sims[np.arange(hi - lo), exclude[lo:hi]] = -np.inf
        if k < n:
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n), sims.shape).copy()
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -top_sims), axis=1)
        indices[lo:hi] = np.take_along_axis(top, order, axis=1)
        sims_out[lo:hi] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims_out


def _n_lists(n: int) -> int:
    return int(max(1, min(round(4 * np.sqrt(n)), n // TRAIN_PER_LIST)))


def _n_probe(n_lists: int) -> int:
    return int(min(n_lists, N_PROBE))


def _build_ivf(features, seed, progress, cancel):
    """faiss IVF-Flat (inner product) over ``features``, trained on a seeded sample, added in
    chunks (a memory map is read chunk by chunk)."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise ConfigError("approximate neighbour search needs faiss: pip install faiss-cpu "
                          "(or use method='exact').") from exc
    n, dim = features.shape
    started = time.perf_counter()
    n_lists = _n_lists(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(seed)
    index.cp.niter = TRAIN_ITERATIONS
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, n_lists * TRAIN_PER_LIST), replace=False))
    index.train(np.ascontiguousarray(features[sample], dtype=np.float32))
    for lo in range(0, n, SEARCH_CHUNK):
        if cancel is not None and cancel():
            raise Cancelled("index build cancelled")
        hi = min(n, lo + SEARCH_CHUNK)
        index.add(np.ascontiguousarray(features[lo:hi], dtype=np.float32))
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress("index", hi, n, hi / elapsed if elapsed > 0 else None)
    index.nprobe = _n_probe(n_lists)
    log.info("faiss IVF-Flat over %d x %d (%d lists, nprobe %d) in %.1f s", n, dim, n_lists,
             index.nprobe, time.perf_counter() - started)
    return index


def _faiss_search(index, queries, k, exact_rows):
    sims, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    short = np.flatnonzero((found < 0).any(axis=1))
    if short.size:  # the probed lists held fewer than k rows: answer those exactly
        exact_found, exact_sims = exact_rows(short, queries[short], k)
        found[short], sims[short] = exact_found, exact_sims
    return found.astype(np.int32), sims.astype(np.float32)


def _drop_self(found, sims, own, k):
    """Remove each query's own row from its k + 1 results (or the last result when absent)."""
    is_self = found == own[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    # a row could list itself twice only with duplicate ids, which faiss never returns
    return found[keep].reshape(-1, k), sims[keep].reshape(-1, k)


# ---- validation --------------------------------------------------------------------------------
def _resolve_method(method: str, n: int) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown neighbour search {method!r}; valid: {', '.join(METHODS)}.")
    if method == "auto":
        return "exact" if n <= EXACT_MAX_ROWS else "approximate"
    return method


def _validate_features(features):
    features = features if isinstance(features, np.memmap) else np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"features must be a non-empty 2-D (N, D) array, got shape {features.shape}.")
    if features.dtype.kind != "f":
        raise DataError(f"features must be floating point, got {features.dtype}.")
    return features


def _check_graph_labels(graph: KnnGraph, labels) -> np.ndarray:
    labels = np.asarray(labels).ravel().astype(np.int64)
    if labels.size != len(graph):
        raise DataError(f"labels has {labels.size} entries but the kNN graph has {len(graph)} rows.")
    return labels


def _cached(path: Path, meta: dict) -> bool:
    found = atomic.read_sidecar(path)
    return bool(found) and all(found.get(key) == value for key, value in meta.items())
