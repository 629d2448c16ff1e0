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
  similarity-weighted share of the k neighbours that carry the sample's given label (each
  neighbour's vote optionally weighted by a trust in its own label).
- :func:`trusted_knn_agreement`: (N,) float64 in [0, 1], higher = more likely correct: the same
  vote where a neighbour counts by its similarity and by how much the evidence trusts its label
  (the paper's scores and its own neighbour vote), propagated over the graph to a fixed point.
  This is the ``knn_agreement`` of a fit.
- :func:`lemon_distance`: (N,) float64 >= 0, LOWER = more likely correct (a distance, LEMoN-style);
  the score table carries its per-class min-max normalisation ``lemon_score`` (higher = cleaner).
- :func:`outlier_scores`: ``(score, z)``: (N,) mean cosine distance to the k neighbours in
  [0, 2] (higher = farther from everything) and its robust z-score.
- :func:`find_duplicates`: ``duplicate_group`` (N,) int64 (-1 = no near-duplicate), and per
  sample whether its group mixes given labels (or train / test splits).
- :func:`match_across_splits`: :class:`SplitMatches`, each sample's nearest sample in the other
  split of its dataset (the test split of a training set): ``index`` (N,) int64 and
  ``similarity`` (N,) float32; a pair at or above the duplicate threshold sits on both sides.

The index itself (exact search for small N, faiss's inverted-file index above, cached on disk per
embedding) lives in :mod:`clipcleaner_core.knn_index`; its names are re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, DataError
from .knn_index import (
    EXACT_MAX_ROWS, METHODS, KnnGraph, NeighbourIndex, index_key, knn_graph, neighbour_index,
)

__all__ = [  # the index's names too: one entry point for the neighbour features
    "EXACT_MAX_ROWS", "METHODS", "KnnGraph", "NeighbourIndex", "index_key", "knn_graph",
    "neighbour_index", "neighbour_weights", "knn_agreement", "trusted_knn_agreement",
    "class_text_centroids",
    "lemon_distance", "outlier_scores", "max_text_similarity", "Duplicates", "find_duplicates",
    "SplitMatches", "match_across_splits", "rank_by_query",
]

#: similarity weights exp((s - s_nearest) / KNN_TEMPERATURE): nearer neighbours count more
KNN_TEMPERATURE = 0.07
#: LEMoN-style distance = d(image, label text) + BETA * s_n + GAMMA * s_m (LEMoN's form; fixed here)
LEMON_BETA = 1.0
LEMON_GAMMA = 1.0
#: trusted kNN agreement: rounds of trust propagation at most, and the change that ends them early
TRUST_ROUNDS = 10
TRUST_TOLERANCE = 1e-4


# ---- scores ----------------------------------------------------------------------------------
def neighbour_weights(graph: KnnGraph, *, temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """(N, k) float64 weights ``exp((s_ij - s_i1) / temperature)``: the nearest neighbour weighs
    1, farther ones less.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> from clipcleaner_core.neighbours import neighbour_weights
    >>> weights = neighbour_weights(graph)
    >>> weights.shape, bool((weights[:, 0] == 1).all()), bool((weights <= 1).all())
    ((200, 5), True, True)
    """
    sims = graph.similarities.astype(np.float64)
    if sims.shape[1] == 0:
        return sims
    return np.exp((sims - sims[:, :1]) / temperature)


def knn_agreement(graph: KnnGraph, labels: np.ndarray, *,
                  temperature: float = KNN_TEMPERATURE, trust: np.ndarray | None = None
                  ) -> np.ndarray:
    """(N,) float64 in [0, 1], higher = more likely correct: the similarity-weighted share of a
    sample's k neighbours whose given label equals its own (SimiFeat-style voting). With ``trust``
    (N,) in [0, 1] neighbour j's vote is also weighted by ``trust[j]`` (how much its own label is
    believed); a sample whose neighbours all have zero trust falls back to the plain vote. 1.0
    when the graph has no neighbours (a single sample).

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> from clipcleaner_core.neighbours import knn_agreement
    >>> agreement = knn_agreement(graph, p["labels"])
    >>> bool(agreement[wrong].mean() < agreement[~wrong].mean())  # flipped labels agree less
    True
    """
    labels = _check_graph_labels(graph, labels)
    if graph.k == 0:
        return np.ones(labels.size)
    weights = neighbour_weights(graph, temperature=temperature)
    same = labels[graph.indices] == labels[:, None]
    plain = (weights * same).sum(axis=1) / weights.sum(axis=1)
    if trust is None:
        return plain
    trusted = weights * np.asarray(trust, dtype=np.float64)[graph.indices]
    total = trusted.sum(axis=1)
    voted = (trusted * same).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, voted, plain)


def trusted_knn_agreement(graph: KnnGraph, labels: np.ndarray, evidence: np.ndarray, *,
                          temperature: float = KNN_TEMPERATURE, rounds: int = TRUST_ROUNDS,
                          tolerance: float = TRUST_TOLERANCE) -> np.ndarray:
    """(N,) float64 in [0, 1], higher = more likely correct: the kNN label agreement where each
    neighbour's vote counts by its similarity and by the trust in its own label.

    ``evidence`` (N,) in [0, 1], higher = more likely correct, is what the other scores say about
    each sample alone (the fit passes the mean of the paper's four scores: its ``label_score``
    with every score on). A sample's trust is the mean of its evidence and its own trusted vote,
    so the trust propagates over the graph (label propagation, as SimiFeat's repeated voting):
    starting from ``trust = evidence``, the vote and the trust are recomputed until the trust
    moves by less than ``tolerance`` (at most ``rounds`` rounds). A flipped label inside a
    cluster loses twice: its neighbours carry another label, and those neighbours are trusted;
    a mislabelled neighbour, distrusted by the evidence, barely votes.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> from clipcleaner_core.neighbours import knn_agreement, trusted_knn_agreement
    >>> evidence = (~wrong).astype(float) * 0.8 + 0.1  # what the per-sample scores say
    >>> trusted = trusted_knn_agreement(graph, p["labels"], evidence)
    >>> plain = knn_agreement(graph, p["labels"])
    >>> bool(trusted[wrong].mean() <= plain[wrong].mean()), bool(((trusted >= 0) & (trusted <= 1)).all())
    (True, True)
    """
    labels = _check_graph_labels(graph, labels)
    evidence = np.asarray(evidence, dtype=np.float64).ravel()
    if evidence.size != labels.size or not np.all((evidence >= 0) & (evidence <= 1)):
        raise DataError(f"evidence must hold {labels.size} values in [0, 1] (one per sample).")
    trust = evidence
    vote = knn_agreement(graph, labels, temperature=temperature, trust=trust)
    for _ in range(max(0, int(rounds) - 1)):
        updated = 0.5 * (evidence + vote)
        if np.max(np.abs(updated - trust), initial=0.0) < tolerance:
            break
        trust = updated
        vote = knn_agreement(graph, labels, temperature=temperature, trust=trust)
    return vote


def class_text_centroids(text_features: np.ndarray, text_labels: np.ndarray, *,
                         num_classes: int) -> np.ndarray:
    """(K, D) float64: the L2-normalised mean of each class's prompt features.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.neighbours import class_text_centroids
    >>> text = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> class_text_centroids(text, np.array([0, 0, 1]), num_classes=2).round(3).tolist()
    [[0.707, 0.707], [0.0, 1.0]]
    """
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

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> from clipcleaner_core.neighbours import class_text_centroids, lemon_distance
    >>> centroids = class_text_centroids(p["text_features"], p["text_labels"], num_classes=2)
    >>> distance = lemon_distance(p["features"], graph, p["labels"], centroids)
    >>> bool(distance[wrong].mean() > distance[~wrong].mean())  # a distance: flipped labels are farther
    True
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

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> import numpy as np
    >>> from clipcleaner_core.neighbours import outlier_scores
    >>> far = np.vstack([p["features"], -p["features"][:1]])  # one point opposite to everything
    >>> score, z = outlier_scores(knn_graph(far, k=5))
    >>> bool(z[-1] > 3.5), bool(score[-1] > np.median(score))  # flagged: farther than the rest
    (True, True)
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
    computed in row chunks (never the whole (N, K) matrix).

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> from clipcleaner_core.neighbours import class_text_centroids, max_text_similarity
    >>> centroids = class_text_centroids(p["text_features"], p["text_labels"], num_classes=2)
    >>> best = max_text_similarity(p["features"], centroids)
    >>> best.shape, bool((best <= 1 + 1e-6).all())
    ((200,), True)
    """
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
    sample (e.g. "train" / "test").

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.neighbours import find_duplicates, knn_graph
    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(6, 8))
    >>> features[5] = features[0]  # row 5 is a copy of row 0 with another label
    >>> features /= np.linalg.norm(features, axis=1, keepdims=True)
    >>> duplicates = find_duplicates(knn_graph(features, k=2), np.array([0, 1, 0, 1, 0, 1]))
    >>> duplicates.group.tolist(), duplicates.conflicting.tolist()
    ([0, -1, -1, -1, -1, 0], [True, False, False, False, False, True])
    """
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


@dataclass(frozen=True, eq=False)
class SplitMatches:
    """Each sample's nearest sample in another split of the same dataset (e.g. the test split of a
    training set): ``index`` (N,) int64, that sample's dataset index in the other split;
    ``similarity`` (N,) float32, their cosine similarity; ``split`` the other split's name."""

    index: np.ndarray
    similarity: np.ndarray
    split: str

    def duplicates(self, threshold: float) -> np.ndarray:
        """(N,) bool: the samples with a near-duplicate (cosine >= ``threshold``) in the other split."""
        return self.similarity >= threshold


def match_across_splits(features: np.ndarray, other_features: np.ndarray, *,
                        other_index: np.ndarray | None = None, split: str = "test",
                        method: str = "auto", key: str | None = None,
                        cache_root=None, progress=None, cancel=None) -> SplitMatches:
    """The nearest sample of ``other_features`` (M, D) (another split, same encoder) for every row
    of ``features`` (N, D), by cosine similarity: the index is built over the other split (cached
    under ``key`` like any neighbour index) and searched in row chunks. ``other_index`` (M,) maps
    the other split's rows to its dataset indices (default 0..M-1)."""
    from .knn_index import SEARCH_CHUNK

    index = neighbour_index(other_features, key=key, cache_root=cache_root, method=method,
                            progress=progress, cancel=cancel)
    if np.shape(features)[1] != np.shape(other_features)[1]:
        raise DataError(f"the other split's features have dimension {np.shape(other_features)[1]} "
                        f"but these have {np.shape(features)[1]}; embed both with the same model.")
    n = np.shape(features)[0]
    rows = np.empty(n, dtype=np.int64)
    similarity = np.empty(n, dtype=np.float32)
    for lo in range(0, n, SEARCH_CHUNK):
        if cancel is not None and cancel():
            from .errors import Cancelled

            raise Cancelled("the check across splits was cancelled")
        found, sims = index.search(np.asarray(features[lo:lo + SEARCH_CHUNK], dtype=np.float32), 1)
        rows[lo:lo + found.shape[0]], similarity[lo:lo + found.shape[0]] = found[:, 0], sims[:, 0]
    mapping = np.arange(np.shape(other_features)[0]) if other_index is None else np.asarray(other_index)
    return SplitMatches(mapping[rows].astype(np.int64), similarity, str(split))


def rank_by_query(index: NeighbourIndex, query: np.ndarray, *, k: int = 100
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows most similar to ``query`` (D,) (an image feature for "more like this", or a text
    feature of the same model for a typed description), nearest first: ``(rows, similarities)``
    each (min(k, N),).

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.neighbours import knn_graph
    >>> p = make_synthetic_problem(200, 2, 8, noise_rate=0.2, seed=0)
    >>> graph = knn_graph(p["features"], k=5)  # exact search below EXACT_MAX_ROWS rows
    >>> wrong = p["labels"] != p["true_labels"]
    >>> from clipcleaner_core.neighbours import neighbour_index, rank_by_query
    >>> index = neighbour_index(p["features"])
    >>> rows, similarities = rank_by_query(index, p["features"][7], k=3)  # "more like this"
    >>> int(rows[0]), round(float(similarities[0]), 3)
    (7, 1.0)
    """
    query = np.asarray(query, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(query))
    if not norm > 0 or not np.isfinite(norm):
        raise DataError("the query feature is zero or not finite; embed a non-empty text or image.")
    rows, sims = index.search(query[None, :] / norm, k)
    return rows[0].astype(np.int64), sims[0]


def _check_graph_labels(graph: KnnGraph, labels) -> np.ndarray:
    labels = np.asarray(labels).ravel().astype(np.int64)
    if labels.size != len(graph):
        raise DataError(f"labels has {labels.size} entries but the kNN graph has {len(graph)} rows.")
    return labels


