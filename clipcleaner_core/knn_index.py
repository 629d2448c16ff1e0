"""The k-nearest-neighbour index over image features: exact for small N, faiss above, cached.

``NeighbourIndex(features).graph(k)`` is every sample's k nearest other samples by cosine
similarity (a :class:`KnnGraph`); ``.search(queries, k)`` answers new queries (an image or a text
feature of the same model). Search is exact up to ``EXACT_MAX_ROWS`` rows: float32 matrix
products over row blocks of at most ``BLOCK_BYTES``, the top k kept per block, so memory grows
with N x k, never N x N. Above that it is approximate: faiss's inverted-file index (IVF-Flat, inner
product); a query searches its ``N_PROBE`` nearest lists, and so does each sample for the kNN
graph, list by list as one matrix product. Recall at k = 10 against exact search is
checked in ``tests/test_neighbours.py`` (>= 0.95 on clustered data) and measured on real-sized
features by ``benchmarks/bench_neighbours.py --features``. :func:`neighbour_index` builds an index once per embedding
and caches it, with its graphs, on disk (atomic writes, a JSON sidecar per file).
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
#: lists searched per query, and per sample by the kNN graph. Measured with
#: benchmarks/bench_neighbours.py --features on 10^6 x 512 rows (4,000 lists): recall at k = 10
#: 0.993 at 1.7 ms a query (16 lists: 0.977; 200: 0.9997 at 8 ms); at 30,000 rows (693 lists) 0.950
N_PROBE = 32
FORMAT_VERSION = 1
#: the kNN graph's method: 2 = each sample against its own N_PROBE nearest lists (1 joined each
#: list with the lists nearest its centroid: recall 0.930 at 10^6 rows); older graphs are rebuilt
GRAPH_VERSION = 2


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
            self._faiss.nprobe = _n_probe(self._faiss.nlist)  # as built now, whatever the file says
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
        meta = self._meta()
        if self.method_ == "approximate":  # the exact graph did not change
            meta["graph_version"] = GRAPH_VERSION
        if path is not None and _cached(path, meta):
            with np.load(path, allow_pickle=False) as data:
                return KnnGraph(data["indices"], data["similarities"], self.method_)
        if self._faiss is None and self._exact is None:
            self.build(progress=progress, cancel=cancel)
        started = time.perf_counter()
        if self._faiss is not None:
            indices, similarities = _ivf_self_join(self._faiss, self.features, k, self._exact_rows,
                                                   progress, cancel)
        else:
            indices, similarities = self._exact_graph(n, k, progress, cancel)
        graph = KnnGraph(indices, similarities, self.method_)
        if path is not None:
            with atomic.atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, indices=indices, similarities=similarities)
            atomic.write_sidecar(path, meta)
        log.info("kNN graph (%s, N=%d, k=%d) in %.1f s", self.method_, n, k,
                 time.perf_counter() - started)
        return graph

    def _exact_graph(self, n, k, progress, cancel):
        indices = np.empty((n, k), dtype=np.int32)
        similarities = np.empty((n, k), dtype=np.float32)
        rows = _exact_block_rows(n)
        started = time.perf_counter()
        for lo in range(0, n, rows):
            if cancel is not None and cancel():
                raise Cancelled("neighbour search cancelled")
            hi = min(n, lo + rows)
            indices[lo:hi], similarities[lo:hi] = _exact_search(
                self._exact, self._exact[lo:hi], k, exclude=np.arange(lo, hi))
            _report(progress, "neighbours", hi, n, started)
        return indices, similarities

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
    from there next time (atomic writes, a sidecar per file).

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.neighbours import neighbour_index
    >>> index = neighbour_index(np.eye(3))
    >>> rows, sims = index.search(np.array([[0.0, 1.0, 0.0]]), 2)
    >>> rows.tolist()[0][0], index.method_
    (1, 'exact')
    """
    folder = None
    if key is not None:
        from .paths import cache_dir

        root = Path(cache_root) if cache_root is not None else cache_dir()
        n = np.shape(features)[0]
        folder = root / "neighbours" / f"{key}-{_resolve_method(method, n)}"
    return NeighbourIndex(features, method=method, seed=seed, folder=folder).build(
        progress=progress, cancel=cancel)


def index_key(embedding_key: str, sample_index: np.ndarray) -> str:
    """The cache key of the index over the rows ``sample_index`` of embedding ``embedding_key``.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.neighbours import index_key
    >>> index_key("emb123", np.arange(10)) == index_key("emb123", np.arange(10)), len(index_key("emb123", np.arange(10)))
    (True, 24)
    """
    return atomic.hash_json({"embedding": embedding_key,
                             "rows": atomic.hash_array(np.asarray(sample_index, dtype=np.int64))})[:24]


def knn_graph(features: np.ndarray, *, k: int = 10, method: str = "auto", seed: int = 0,
              key: str | None = None, cache_root: str | Path | None = None,
              progress: Progress | None = None,
              cancel: Callable[[], bool] | None = None) -> KnnGraph:
    """The kNN graph of ``features`` (N, D): each row's ``k`` nearest other rows (see
    :class:`KnnGraph`); cached on disk when ``key`` is given.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> features = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    >>> graph = knn_graph(features, k=1)
    >>> graph.indices.ravel().tolist(), graph.method
    ([1, 0, 3, 2], 'exact')
    """
    index = neighbour_index(features, key=key, cache_root=cache_root, method=method, seed=seed,
                            progress=progress, cancel=cancel)
    return index.graph(k, progress=progress, cancel=cancel)


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
    """Lists a query searches: N_PROBE (all when fewer)."""
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


def _ivf_self_join(index, features, k, exact_rows, progress, cancel):
    """The kNN graph of the ``features`` (N, D) held in an IVF-Flat ``index``: each sample is
    compared with the members of its ``N_PROBE`` nearest lists, the lists a query of it would
    search, so the graph's recall is the query recall. The work runs list by list, as one matrix
    product of the samples probing a list against its members (per-query scanning runs far below
    BLAS speed; this runs at it). Each sample's own nearest list goes first, so that its running
    k-th similarity is high early and most later blocks are skipped without a top-k merge."""
    from faiss.contrib.inspect_tools import get_invlist

    n, dim = features.shape
    n_lists = index.nlist
    n_probe = _n_probe(n_lists)
    probes = np.empty((n, n_probe), dtype=np.int32)  # each sample's nearest lists, nearest first
    for lo in range(0, n, SEARCH_CHUNK):
        hi = min(n, lo + SEARCH_CHUNK)
        probes[lo:hi] = index.quantizer.search(
            np.ascontiguousarray(features[lo:hi], dtype=np.float32), n_probe)[1]
    best_ids = np.full((n, k), -1, dtype=np.int64)
    best_sims = np.full((n, k), -np.inf, dtype=np.float32)
    kth = np.full(n, -np.inf, dtype=np.float32)  # each sample's k-th best similarity so far
    started, done = time.perf_counter(), 0
    for ranks in (slice(0, 1), slice(1, n_probe)):  # the nearest list first, then the others
        part = probes[:, ranks]
        width = part.shape[1]
        flat = part.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(n_lists + 1))
        for lst in range(n_lists):
            if cancel is not None and cancel():
                raise Cancelled("neighbour search cancelled")
            probing = order[bounds[lst]:bounds[lst + 1]] // width  # ascending sample numbers
            members, codes = get_invlist(index.invlists, lst)
            done += probing.size
            if probing.size == 0 or members.size == 0:
                continue
            codes = codes.view(np.float32).reshape(-1, dim)
            sorter = np.argsort(members)
            rows = max(1, BLOCK_BYTES // (4 * members.size))  # a list probed by many: in blocks
            for lo in range(0, probing.size, rows):
                queries = probing[lo:lo + rows]
                sims = np.asarray(features[queries], dtype=np.float32) @ codes.T
                at = sorter[np.minimum(np.searchsorted(members, queries, sorter=sorter),
                                       members.size - 1)]
                own = np.flatnonzero(members[at] == queries)  # a sample is not its own neighbour
                sims[own, at[own]] = -np.inf
                better = np.flatnonzero(sims.max(axis=1) > kth[queries])
                if better.size:
                    _merge_top(best_ids, best_sims, kth, queries[better], sims[better], members, k)
            _report(progress, "neighbours", done // n_probe, n, started)
    _report(progress, "neighbours", n, n, started)
    short = np.flatnonzero(~np.isfinite(best_sims).all(axis=1))
    if short.size:  # fewer than k candidates in the probed lists: search these rows exactly
        found, sims = exact_rows(short, np.asarray(features[short], dtype=np.float32), k + 1)
        keep = found != short[:, None]
        keep[~(~keep).any(axis=1), -1] = False
        best_ids[short], best_sims[short] = found[keep].reshape(-1, k), sims[keep].reshape(-1, k)
    order = np.lexsort((best_ids, -best_sims), axis=1)  # nearest first, ties by sample number
    return (np.take_along_axis(best_ids, order, axis=1).astype(np.int32),
            np.take_along_axis(best_sims, order, axis=1))


def _merge_top(best_ids, best_sims, kth, queries, sims, members, k):
    """Merge the top k of each row of ``sims`` (rows: ``queries``; columns: ``members``) into the
    running top k of those samples."""
    m = members.size
    if k < m:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
    else:
        top, top_sims = np.broadcast_to(np.arange(m), sims.shape), sims
    ids = np.concatenate([best_ids[queries], members[top]], axis=1)
    cand = np.concatenate([best_sims[queries], top_sims], axis=1)
    keep = np.argpartition(-cand, k - 1, axis=1)[:, :k]
    best_ids[queries] = np.take_along_axis(ids, keep, axis=1)
    best_sims[queries] = kept = np.take_along_axis(cand, keep, axis=1)
    kth[queries] = kept.min(axis=1)


def _report(progress, stage, done, total, started):
    if progress is not None:
        elapsed = time.perf_counter() - started
        progress(stage, done, total, done / elapsed if elapsed > 0 else None)


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


def _cached(path: Path, meta: dict) -> bool:
    found = atomic.read_sidecar(path)
    return bool(found) and all(found.get(key) == value for key, value in meta.items())
