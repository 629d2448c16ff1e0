"""Probabilities, scores and mixture posteriors: DESIGN §2 steps 3–6, fitted once.

``fit_scores`` computes everything that is expensive or fitted (zero-shot and probe
probabilities, the four scores, the per-class mixture posteriors) and returns a ``ScoreFit``;
``clipcleaner_core.selection.select`` then applies thresholds to it in milliseconds. A fit is
saved as an ``.npz`` plus a JSON sidecar with ``save_fit`` / ``load_fit``.

Score contracts (N = samples, K = classes; "higher = more likely the given label is correct"):

- ``p_zs``, ``p_lr``: (N, K) float32 probabilities, rows sum to 1.
- loss score: (N,) float64 in [0, 1]; ``log p[i, y_i]`` min-max normalised within each given
  class; a class whose values are all equal gets 1.0. Higher = more likely correct.
- consistency: (N,) float64 in (0, 1]; ``p[i, y_i] / max_k p[i, k]`` computed in log space
  (floored at the smallest positive float64 so it never underflows to 0). 1 = the given label
  is the most probable class.
- clean probability: (N,) float64 in [0, 1]; posterior of the larger-mean component of a
  2-component Gaussian mixture fitted to the loss scores of each given class (``gmm.py``);
  1.0 for classes with fewer than 2 samples.
- neighbour evidence (``config.neighbours`` = k > 0; beyond the paper, see ``neighbours.py``):
  ``knn_agreement`` (N,) in [0, 1], the trusted kNN vote (``neighbours.trusted_knn_agreement``:
  neighbours count by similarity and by the trust in their own labels, which starts from the
  mean of the paper's scores of that neighbour and propagates over the graph); ``lemon_score``
  (N,) in [0, 1] (a loss-kind score: the LEMoN-style distance negated and min-max normalised
  within each class, with its mixture posterior ``lemon_clean_prob``; needs zero-shot text
  features); ``outlier_score`` (N,) in
  [0, 2] and ``outlier_z`` (N,); the kNN graph ``knn_indices`` / ``knn_similarities`` (N, k).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.special import log_softmax

from . import accel, atomic
from .errors import ConfigError, DataError
from .gmm import ClassMixtures, fit_mixtures, mixture_posterior
from .neighbours import KnnGraph, class_text_centroids, knn_graph, lemon_distance, \
    max_text_similarity, outlier_scores, trusted_knn_agreement
from .probe import PROBE_MODES, fit_probe_predictor
from .progress import Progress, RateMeter, check_cancel, notify
from .validation import check_labels

log = logging.getLogger(__name__)

# 2: the per-class mixtures are stored; 3: probe at the whitened tolerance; 4: per-sample vectors
# and a top-k instead of the (N, K) matrices; 5: neighbour evidence; 6: the trusted kNN vote
FIT_FORMAT_VERSION = 6
TOP_K = 5
#: bytes of float64 work per row chunk: rows = CHUNK_BYTES // (8 * max(K, prompts)), at least 256
CHUNK_BYTES = 64 * 2**20
_ARRAYS = (
    "labels", "zs_loss_score", "zs_consistency", "lr_loss_score", "lr_consistency",
    "zs_clean_prob", "lr_clean_prob", "zs_top_classes", "zs_top_probs", "lr_top_classes",
    "lr_top_probs", "suggested_both", "knn_indices", "knn_similarities", "knn_agreement",
    "lemon_score", "lemon_clean_prob", "outlier_score", "outlier_z",
)
_MIXTURE_PREFIXES = ("zs", "lr", "lemon")
#: the paper's per-sample scores the trusted kNN vote starts from (the gates of DESIGN §2 step 7)
_PAPER_GATES = ("zs_clean_prob", "zs_consistency", "lr_clean_prob", "lr_consistency")
#: k of the neighbour evidence computed by default where it is cheap (ScoringConfig.neighbours None)
AUTO_NEIGHBOURS = 10


@dataclass(frozen=True)
class ScoringConfig:
    """What to fit. ``temperature`` is tau of DESIGN §2 step 3; ``probe`` one of
    ``"in-sample"`` (the paper), ``"cross-val"`` (``n_folds``-fold out-of-sample) or ``"off"``;
    ``probe_c`` is the probe's inverse L2 strength; ``seed`` drives the cross-val folds.
    ``neighbours`` is k of the neighbour evidence (0 = none; the paper's rule never reads it);
    None (the default) means :data:`AUTO_NEIGHBOURS` when the exact kNN graph is cheap (at most
    ``knn_index.EXACT_MAX_ROWS`` samples) and none above, where building an approximate index
    takes minutes and memory that only users of the neighbour scores should pay: they ask for it
    with an explicit k. See :meth:`resolved`."""

    temperature: float = 0.07
    zeroshot: bool = True
    probe: str = "in-sample"
    n_folds: int = 5
    probe_c: float = 1.0
    seed: int = 0
    neighbours: int | None = None

    def __post_init__(self):
        if self.probe not in PROBE_MODES:
            raise ConfigError(
                f"unknown probe mode {self.probe!r}; valid modes: {', '.join(PROBE_MODES)}."
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature={self.temperature!r} must be > 0 (default 0.07).")
        if self.probe == "cross-val" and self.n_folds < 2:
            raise ConfigError(f"n_folds={self.n_folds!r} must be >= 2 for cross-val.")
        if not self.probe_c > 0:
            raise ConfigError(f"probe_c={self.probe_c!r} must be > 0 (default 1.0).")
        if self.neighbours is not None and (
                isinstance(self.neighbours, bool) or int(self.neighbours) != self.neighbours
                or self.neighbours < 0):
            raise ConfigError(f"neighbours={self.neighbours!r} must be a whole number >= 0 "
                              "(k nearest neighbours; 0 turns the neighbour evidence off).")

    def resolved(self, n: int) -> "ScoringConfig":
        """This config with ``neighbours`` an int for ``n`` samples (see the class doc)."""
        if self.neighbours is not None:
            return self
        from .knn_index import EXACT_MAX_ROWS

        return dataclasses.replace(self, neighbours=AUTO_NEIGHBOURS if n <= EXACT_MAX_ROWS else 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ScoringConfig":
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


@dataclass(frozen=True, eq=False)
class ScoreFit:
    """Fitted scores for one (features, labels, prompts, config): per-sample vectors only.

    The (N, K) probability matrices are never kept: they are computed in row chunks and reduced at
    once to what steps 5-10 need. Per source ``s`` in {"zs", "lr"} (None when the source is off):

    - ``s_loss_score``, ``s_consistency``, ``s_clean_prob``: (N,) float64, see the module doc;
    - ``s_top_classes``: (N, k) int32 the ``k = min(TOP_K, K)`` most probable classes, most
      probable first; ``s_top_probs``: (N, k) float32 their probabilities;
    - ``s_mixtures``: the per-class mixtures behind ``s_clean_prob``.

    ``suggested_both``: (N,) int32 argmax of ``p_zs + p_lr`` (None unless both sources are on);
    the single-source argmaxes are ``s_top_classes[:, 0]``.

    Neighbour evidence (None when ``config.neighbours == 0``; ``lemon_*`` also without zero-shot):
    ``knn_indices`` (N, k) int32 / ``knn_similarities`` (N, k) float32, the kNN graph;
    ``knn_agreement``, ``lemon_score``, ``lemon_clean_prob``, ``outlier_score``, ``outlier_z``
    (N,) float64 as in the module doc; ``lemon_mixtures`` the mixtures behind ``lemon_clean_prob``.
    """

    config: ScoringConfig
    num_classes: int
    labels: np.ndarray
    zs_loss_score: np.ndarray | None = None
    zs_consistency: np.ndarray | None = None
    lr_loss_score: np.ndarray | None = None
    lr_consistency: np.ndarray | None = None
    zs_clean_prob: np.ndarray | None = None
    lr_clean_prob: np.ndarray | None = None
    zs_top_classes: np.ndarray | None = None
    zs_top_probs: np.ndarray | None = None
    lr_top_classes: np.ndarray | None = None
    lr_top_probs: np.ndarray | None = None
    suggested_both: np.ndarray | None = None
    zs_mixtures: ClassMixtures | None = None
    lr_mixtures: ClassMixtures | None = None
    knn_indices: np.ndarray | None = None
    knn_similarities: np.ndarray | None = None
    knn_agreement: np.ndarray | None = None
    lemon_score: np.ndarray | None = None
    lemon_clean_prob: np.ndarray | None = None
    outlier_score: np.ndarray | None = None
    outlier_z: np.ndarray | None = None
    lemon_mixtures: ClassMixtures | None = None

    def suggested_label(self, *, zeroshot: bool, probe: bool) -> np.ndarray:
        """(N,) int64 argmax of the mean of the chosen probability matrices (DESIGN §2 step 10)."""
        zs, lr = bool(zeroshot and self.has_zeroshot), bool(probe and self.has_probe)
        if zs and lr:
            return self.suggested_both.astype(np.int64)
        if zs or lr:
            return getattr(self, "zs_top_classes" if zs else "lr_top_classes")[:, 0].astype(np.int64)
        raise ConfigError("suggested_label needs zero-shot or probe probabilities.")

    def top_classes(self, *, zeroshot: bool, probe: bool) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) classes and probabilities, most probable first, of the zero-shot or the probe
        source (the probe's when both are chosen and available: it is fitted to these labels)."""
        prefix = "lr" if (probe and self.has_probe) or not (zeroshot and self.has_zeroshot) else "zs"
        classes = getattr(self, f"{prefix}_top_classes")
        if classes is None:
            raise ConfigError("top_classes needs zero-shot or probe probabilities.")
        return classes, getattr(self, f"{prefix}_top_probs")

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def has_zeroshot(self) -> bool:
        return self.zs_loss_score is not None

    @property
    def has_probe(self) -> bool:
        return self.lr_loss_score is not None

    @property
    def has_neighbours(self) -> bool:
        return self.knn_indices is not None

    @property
    def knn(self) -> KnnGraph | None:
        """The kNN graph the neighbour evidence came from (None without it)."""
        if self.knn_indices is None:
            return None
        return KnnGraph(self.knn_indices, self.knn_similarities, "cached")


def zero_shot_log_probabilities(
    image_features: np.ndarray,
    text_features: np.ndarray,
    text_labels: np.ndarray,
    *,
    num_classes: int,
    temperature: float = 0.07,
    chunk_size: int = 8192,
) -> np.ndarray:
    """(N, K) float64 log p_zs with ``p_zs[i,k] = softmax_k(logsumexp_{j: class k}(<f_i,t_j>/tau))``.

    Parameters
    ----------
    image_features
        (N, D) L2-normalised image features.
    text_features
        (M, D) L2-normalised prompt features.
    text_labels
        (M,) int class of each prompt; every class needs at least one prompt.

    Computed in log space, so any temperature > 0 is safe from overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.scoring import zero_shot_log_probabilities
    >>> images = np.array([[1.0, 0.0], [0.0, 1.0]])  # (N=2, D=2), unit rows
    >>> prompts = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])  # two prompts of class 0, one of class 1
    >>> log_p = zero_shot_log_probabilities(images, prompts, np.array([0, 0, 1]), num_classes=2)
    >>> log_p.shape, np.exp(log_p).sum(axis=1).round(6).tolist(), log_p.argmax(axis=1).tolist()
    ((2, 2), [1.0, 1.0], [0, 1])
    """
    image_features, text_features, text_labels = _validate_text(
        image_features, text_features, text_labels, num_classes
    )
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature={temperature!r} must be > 0 (default 0.07).")
    return _compute_zero_shot(image_features, text_features, text_labels, temperature, chunk_size)


def _compute_zero_shot(image_features, text_features, text_labels, temperature, chunk_size):
    order = np.argsort(text_labels, kind="stable")
    text = text_features[order].astype(np.float32)
    starts = np.searchsorted(text_labels[order], np.arange(int(text_labels.max()) + 1))
    out = np.empty((image_features.shape[0], starts.size))
    for lo in range(0, image_features.shape[0], chunk_size):
        sims = image_features[lo:lo + chunk_size].astype(np.float32) @ text.T
        logits = sims.astype(np.float64) / temperature
        peak = np.maximum.reduceat(logits, starts, axis=1)
        widths = np.diff(np.append(starts, logits.shape[1]))
        shifted = np.exp(logits - np.repeat(peak, widths, axis=1))
        class_logits = peak + np.log(np.add.reduceat(shifted, starts, axis=1))
        out[lo:lo + chunk_size] = log_softmax(class_logits, axis=1)
    return out


def loss_score(log_probs: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """(N,) in [0, 1], higher = more likely correct: ``log p[i, y_i]`` min-max normalised within
    each given class; a class whose values are all equal gets 1.0.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.scoring import loss_score
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    >>> loss_score(np.log(probs), np.array([0, 0, 1, 1]), num_classes=2).tolist()  # 1 = best of its class
    [1.0, 0.0, 1.0, 0.0]
    """
    log_probs, labels = _validate_probs(log_probs, labels, num_classes)
    return _compute_loss_score(log_probs, labels, num_classes)


def _compute_loss_score(log_probs, labels, num_classes):
    return _normalise_within_class(log_probs[np.arange(labels.size), labels], labels, num_classes)


def consistency_score(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) in (0, 1], higher = more likely correct: ``p[i, y_i] / max_k p[i, k]``.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.scoring import consistency_score
    >>> probs = np.array([[0.8, 0.2], [0.8, 0.2]])
    >>> consistency_score(np.log(probs), np.array([0, 1])).round(3).tolist()  # p[y] / max p
    [1.0, 0.25]
    """
    log_probs, labels = _validate_probs(log_probs, labels, log_probs.shape[1])
    return _compute_consistency(log_probs, labels)


def _compute_consistency(log_probs, labels):
    own = log_probs[np.arange(labels.size), labels]
    ratio = np.exp(own - log_probs.max(axis=1))
    return np.clip(ratio, np.finfo(np.float64).tiny, 1.0)


def fit_scores(
    image_features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    text_features: np.ndarray | None = None,
    text_labels: np.ndarray | None = None,
    config: ScoringConfig = ScoringConfig(),
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    chunk_rows: int | None = None,
    knn: KnnGraph | None = None,
    device: str = "auto",
) -> ScoreFit:
    """DESIGN §2 steps 3–6 with memory that grows with N, not N x K.

    The probe is fitted first (its loss and gradient in row chunks); then the zero-shot and probe
    log-probabilities are computed ``chunk_rows`` rows at a time (default: ~64 MB of work per
    chunk) and reduced at once to per-sample vectors and a top-k (see :class:`ScoreFit`).
    ``progress(stage, done, total, rate)`` is called per stage (``"probe"``, ``"scores"`` in
    rows, ``"mixtures"``); ``cancel()`` returning True raises
    :class:`~clipcleaner_core.errors.Cancelled` between chunks.

    Parameters
    ----------
    image_features
        (N, D) L2-normalised image features, float32 or float16 (a read-only
        memmap is fine: it is read chunk by chunk, never copied whole).
    labels
        (N,) int given labels in [0, num_classes).
    text_features, text_labels
        (M, D) prompt features and (M,) their classes; required
        when ``config.zeroshot`` is True.
    knn
        a precomputed kNN graph of ``image_features`` with at least ``config.neighbours``
        neighbours (e.g. the cached one of :func:`clipcleaner_core.neighbours.knn_graph`);
        built in memory when None and ``config.neighbours > 0``.
    device
        where the probe's loss and gradient and the zero-shot and probe products run:
        ``"auto"`` (a CUDA GPU when torch sees one, else NumPy on the CPU), ``"cpu"``,
        ``"cuda[:N]"`` (see :mod:`clipcleaner_core.accel`). The selection is the same up to
        float rounding.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.scoring import fit_scores
    >>> p = make_synthetic_problem(300, 3, 16, noise_rate=0.3, seed=0)
    >>> fit = fit_scores(p["features"], p["labels"], num_classes=3, text_features=p["text_features"],
    ...                  text_labels=p["text_labels"])
    >>> len(fit), fit.zs_loss_score.shape, fit.lr_consistency.shape
    (300, (300,), (300,))
    >>> wrong = p["labels"] != p["true_labels"]
    >>> bool(fit.zs_clean_prob[wrong].mean() < fit.zs_clean_prob[~wrong].mean())  # flipped score lower
    True
    """
    features, labels = _validate_features(image_features, labels, num_classes)
    config = config.resolved(labels.size)
    if config.zeroshot and (text_features is None or text_labels is None):
        raise DataError(
            "zero-shot scoring needs text_features and text_labels (an encoder with a text "
            "tower); pass them, or use ScoringConfig(zeroshot=False)."
        )
    if not config.zeroshot and config.probe == "off":
        raise ConfigError("nothing to score: zero-shot is off and probe='off'; enable one.")
    target = accel.fit_device(device)
    args = (features, labels, num_classes, text_features, text_labels, config, chunk_rows,
            progress, cancel)
    if target is None:
        sources, parts = _probabilities_and_reductions(*args, None)
    else:
        try:
            sources, parts = _probabilities_and_reductions(*args, target)
        except accel.out_of_memory_errors() as exc:  # a GPU shared with a training job, say
            log.warning("the fit ran out of memory on %s (%s); fitting on the CPU instead",
                        target, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            accel.release(target)
            sources, parts = _probabilities_and_reductions(*args, None)
        finally:
            accel.release(target)
    notify(progress, "mixtures", 0, 1)
    for prefix in sources:
        loss = parts[f"{prefix}_loss_score"]
        mixtures = fit_mixtures(loss, labels, num_classes=num_classes)
        parts[f"{prefix}_mixtures"] = mixtures
        parts[f"{prefix}_clean_prob"] = mixture_posterior(loss, labels, mixtures)
    notify(progress, "mixtures", 1, 1)
    if config.neighbours:
        parts.update(_neighbour_parts(features, labels, num_classes, config, knn, parts,
                                      text_features, text_labels, progress, cancel))
    return ScoreFit(config=config, num_classes=num_classes, labels=labels, **parts)


def _probabilities_and_reductions(features, labels, num_classes, text_features, text_labels,
                                  config, chunk_rows, progress, cancel, target):
    """Steps 3-5 on ``target`` (a torch device, or None for NumPy): the probe fitted, then every
    source's log-probabilities reduced per row chunk. Returns (the source names, the parts)."""
    device_rows = None if target is None else accel.DeviceRows(features, target)
    sources: dict = {}
    if config.zeroshot:
        sources["zs"] = _ZeroShot(features, text_features, text_labels, num_classes,
                                  config.temperature, device_rows)
    if config.probe != "off":
        sources["lr"] = fit_probe_predictor(
            features, labels, num_classes=num_classes, mode=config.probe,
            n_folds=config.n_folds, c=config.probe_c, seed=config.seed, progress=progress,
            cancel=cancel, device=device_rows or "cpu",
        )
    width = max([num_classes] + [getattr(s, "n_prompts", 0) for s in sources.values()])
    rows = chunk_rows or max(256, CHUNK_BYTES // (8 * width))
    return tuple(sources), _reduce_in_chunks(sources, labels, num_classes, rows, progress, cancel,
                                             target)


def _neighbour_parts(features, labels, num_classes, config, knn, parts, text_features,
                     text_labels, progress, cancel) -> dict:
    """The neighbour evidence of the fit: per-sample vectors and the (N, k) graph."""
    k = min(int(config.neighbours), labels.size - 1)
    if knn is None:
        knn = knn_graph(features, k=max(k, 1), seed=config.seed, progress=progress, cancel=cancel)
    if len(knn) != labels.size or knn.k < k:
        raise DataError(f"the kNN graph has {len(knn)} rows and {knn.k} neighbours; need "
                        f"{labels.size} rows and >= {k} (rebuild it for these features).")
    graph = KnnGraph(np.ascontiguousarray(knn.indices[:, :k]),
                     np.ascontiguousarray(knn.similarities[:, :k]), knn.method)
    centroids = text_max = None
    if config.zeroshot:
        centroids = class_text_centroids(text_features, text_labels, num_classes=num_classes)
        text_max = max_text_similarity(features, centroids)
    outlier_score, outlier_z = outlier_scores(graph, text_max)
    # what the paper's scores say of each sample alone: its label_score with every score on
    evidence = np.mean([parts[name] for name in _PAPER_GATES if name in parts], axis=0)
    out = {"knn_indices": graph.indices, "knn_similarities": graph.similarities,
           "knn_agreement": trusted_knn_agreement(graph, labels, evidence),
           "outlier_score": outlier_score,
           "outlier_z": outlier_z}
    if centroids is not None:
        distance = lemon_distance(features, graph, labels, centroids)
        lemon = _normalise_within_class(-distance, labels, num_classes)
        mixtures = fit_mixtures(lemon, labels, num_classes=num_classes)
        out.update(lemon_score=lemon, lemon_mixtures=mixtures,
                   lemon_clean_prob=mixture_posterior(lemon, labels, mixtures))
    return out


class _ZeroShot:
    """Row chunks of the zero-shot log-probabilities (step 3) without the (N, K) matrix."""

    def __init__(self, features, text_features, text_labels, num_classes, temperature,
                 device_rows=None):
        _, self.text, self.text_labels = _validate_text(features, text_features, text_labels,
                                                        num_classes)
        _check_finite(self.text, "text_features")
        self.features, self.temperature = features, temperature
        self.n_prompts = int(self.text_labels.size)
        self.num_classes = num_classes
        self.device_rows = device_rows
        if device_rows is not None:
            device = device_rows.device
            self._text_t = accel.to_device(self.text.T, device, np.float32)
            self._prompt_class_t = accel.to_device(self.text_labels, device, np.int64)

    def log_proba(self, start: int, stop: int) -> np.ndarray:
        rows = np.asarray(self.features[start:stop], dtype=np.float32)
        return _compute_zero_shot(rows, self.text, self.text_labels, self.temperature, stop - start)

    def log_proba_tensor(self, start: int, stop: int):
        """As :meth:`log_proba`, as a float64 tensor on the device: the similarities in float32,
        each class's log-sum-exp over its prompts and the softmax over classes in float64."""
        import torch

        logits = (self.device_rows.block(start, stop) @ self._text_t).double() / self.temperature
        index = self._prompt_class_t.expand(logits.shape[0], -1)
        shape = (logits.shape[0], self.num_classes)
        peak = torch.full(shape, -torch.inf, dtype=logits.dtype, device=logits.device)
        peak.scatter_reduce_(1, index, logits, reduce="amax")
        total = torch.zeros(shape, dtype=logits.dtype, device=logits.device)
        total.scatter_add_(1, index, (logits - peak.gather(1, index)).exp_())
        return torch.log_softmax(peak + total.log(), dim=1)


def _reduce_in_chunks(sources, labels, num_classes, rows, progress, cancel, device=None) -> dict:
    """Per-sample reductions of every source's log-probabilities, one row chunk at a time: in
    NumPy, or in torch on ``device`` (the (rows, K) matrices stay there and only per-sample
    vectors and the top-k come back)."""
    n = labels.size
    k = min(TOP_K, num_classes)
    reduce_chunk = _numpy_chunk(labels, num_classes, k) if device is None else \
        _device_chunk(labels, k, device)
    own = {p: np.empty(n) for p in sources}
    parts: dict = {}
    for prefix in sources:
        parts[f"{prefix}_consistency"] = np.empty(n)
        parts[f"{prefix}_top_classes"] = np.empty((n, k), dtype=np.int32)
        parts[f"{prefix}_top_probs"] = np.empty((n, k), dtype=np.float32)
    if len(sources) == 2:
        parts["suggested_both"] = np.empty(n, dtype=np.int32)
    meter = RateMeter()
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        check_cancel(cancel, "scoring")
        total = None
        for prefix, source in sources.items():
            (own[prefix][lo:hi], parts[f"{prefix}_consistency"][lo:hi],
             parts[f"{prefix}_top_classes"][lo:hi], parts[f"{prefix}_top_probs"][lo:hi],
             probs) = reduce_chunk(source, lo, hi, with_probs=len(sources) == 2)
            if probs is not None:
                total = probs if total is None else total + probs
        if total is not None:
            parts["suggested_both"][lo:hi] = _host(total.argmax(1))
        notify(progress, "scores", hi, n, meter.rate(hi))
    for prefix in sources:
        parts[f"{prefix}_loss_score"] = _normalise_within_class(own[prefix], labels, num_classes)
    return parts


def _numpy_chunk(labels, num_classes, k):
    """Rows lo:hi of a source -> (own log p, consistency, top-k classes, top-k probabilities,
    probabilities or None), in NumPy."""
    def reduce_chunk(source, lo, hi, *, with_probs):
        log_p, chunk_labels = source.log_proba(lo, hi), labels[lo:hi]
        top = np.argpartition(-log_p, k - 1, axis=1)[:, :k] if k < num_classes else \
            np.broadcast_to(np.arange(num_classes), log_p.shape).copy()
        top_log = np.take_along_axis(log_p, top, axis=1)
        order = np.argsort(-top_log, axis=1, kind="stable")
        return (log_p[np.arange(hi - lo), chunk_labels], _compute_consistency(log_p, chunk_labels),
                np.take_along_axis(top, order, axis=1),
                np.exp(np.take_along_axis(top_log, order, axis=1)),
                np.exp(log_p) if with_probs else None)
    return reduce_chunk


def _device_chunk(labels, k, device):
    """As :func:`_numpy_chunk`, in torch on ``device`` (the probabilities stay there)."""
    import torch

    labels_t = accel.to_device(labels, device, np.int64)
    tiny = float(np.finfo(np.float64).tiny)

    def reduce_chunk(source, lo, hi, *, with_probs):
        log_p = source.log_proba_tensor(lo, hi)
        picked = log_p.gather(1, labels_t[lo:hi, None]).squeeze(1)
        ratio = (picked - log_p.max(dim=1).values).exp_().clamp_(tiny, 1.0)
        top_log, top = torch.topk(log_p, k, dim=1)
        return (_host(picked), _host(ratio), _host(top), _host(top_log.exp()),
                log_p.exp() if with_probs else None)
    return reduce_chunk


def _host(values) -> np.ndarray:
    """A NumPy array, or a torch tensor copied to the host."""
    return values if isinstance(values, np.ndarray) else values.cpu().numpy()


def _normalise_within_class(own, labels, num_classes):
    """``own`` (N,) log p[i, y_i] min-max normalised within each given class (step 5)."""
    own = np.maximum(own, np.finfo(np.float64).min)
    lo = np.full(num_classes, np.inf)
    hi = np.full(num_classes, -np.inf)
    np.minimum.at(lo, labels, own)
    np.maximum.at(hi, labels, own)
    span = (hi - lo)[labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (own - lo[labels]) / span
    return np.where(span > 0, np.clip(scaled, 0.0, 1.0), 1.0)


def _check_finite(array, name, rows=65536):
    for lo in range(0, array.shape[0], rows):
        block = np.asarray(array[lo:lo + rows])
        if not np.isfinite(block).all():
            bad = lo + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise DataError(f"{name} row {bad} contains NaN or inf; drop or re-embed that row.")


def save_fit(fit: ScoreFit, path: str | Path) -> Path:
    """Write ``fit`` atomically to ``path`` (.npz) with a JSON sidecar (config, K, versions).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.scoring import ScoringConfig, fit_scores, load_fit, save_fit
    >>> p = make_synthetic_problem(100, 2, 8, seed=0)
    >>> fit = fit_scores(p["features"], p["labels"], num_classes=2, config=ScoringConfig(zeroshot=False))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> again = load_fit(save_fit(fit, folder / "fit.npz"))
    >>> bool((again.lr_loss_score == fit.lr_loss_score).all()), again.num_classes
    (True, 2)
    """
    arrays = {name: getattr(fit, name) for name in _ARRAYS if getattr(fit, name) is not None}
    for prefix in _MIXTURE_PREFIXES:
        mixtures = getattr(fit, f"{prefix}_mixtures")
        if mixtures is not None:
            arrays.update({f"{prefix}_mixtures_{f.name}": getattr(mixtures, f.name)
                           for f in dataclasses.fields(ClassMixtures)})
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    meta = {
        "format": "clipcleaner.ScoreFit",
        "format_version": FIT_FORMAT_VERSION,
        "num_classes": fit.num_classes,
        "n": len(fit),
        "config": fit.config.to_dict(),
        "arrays": sorted(arrays),
        "numpy": np.__version__,
    }
    atomic.write_sidecar(path, meta)
    return Path(path)


def load_fit(path: str | Path) -> ScoreFit:
    """Read a fit written by :func:`save_fit`.

    Examples
    --------
    See :func:`save_fit`; a file that is not a fit is refused with a message:

    >>> import tempfile, pathlib
    >>> from clipcleaner_core.scoring import load_fit
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "other.npz"
    >>> load_fit(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.DataError: ...other.npz is not a version-... ScoreFit ...
    """
    meta = atomic.read_sidecar(path)
    if meta.get("format") != "clipcleaner.ScoreFit" or meta.get("format_version") != FIT_FORMAT_VERSION:
        raise DataError(
            f"{path} is not a version-{FIT_FORMAT_VERSION} ScoreFit (sidecar "
            f"{atomic.sidecar_path(path).name}); re-run fit_scores and save_fit."
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in _ARRAYS if name in data.files}
        for prefix in _MIXTURE_PREFIXES:
            names = [f"{prefix}_mixtures_{f.name}" for f in dataclasses.fields(ClassMixtures)]
            if all(name in data.files for name in names):
                arrays[f"{prefix}_mixtures"] = ClassMixtures(*(data[name] for name in names))
    return ScoreFit(
        config=ScoringConfig.from_dict(meta["config"]),
        num_classes=int(meta["num_classes"]),
        **arrays,
    )


def _validate_features(image_features, labels, num_classes):
    features = np.asarray(image_features)
    labels = np.asarray(labels).ravel()
    if features.ndim != 2:
        raise DataError(f"image_features must be 2-D (N, D), got shape {features.shape}.")
    if features.shape[0] == 0:
        raise DataError("image_features has no rows: there are no samples to score.")
    if features.dtype.kind != "f":
        raise DataError(f"image_features must be floating point (float16/32/64), got {features.dtype}.")
    if labels.size != features.shape[0]:
        raise DataError(
            f"image_features has {features.shape[0]} rows but labels has {labels.size}; "
            "pass one label per row."
        )
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} must be >= 1.")
    labels = check_labels(labels, name="labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"labels range over [{labels.min()}, {labels.max()}] but must lie in "
            f"[0, {num_classes}); check num_classes or the label mapping."
        )
    _check_finite(features, "image_features")
    return features, labels


def _validate_text(image_features, text_features, text_labels, num_classes):
    text_features = np.asarray(text_features)
    text_labels = np.asarray(text_labels).ravel().astype(np.int64)
    if text_features.ndim != 2 or text_features.shape[0] != text_labels.size:
        raise DataError(
            f"text_features {text_features.shape} must be (M, D) with one text label per row "
            f"(got {text_labels.size} text labels)."
        )
    if text_features.shape[1] != np.shape(image_features)[1]:
        raise DataError(
            f"text features have dimension {text_features.shape[1]} but image features have "
            f"{np.shape(image_features)[1]}; embed both with the same model."
        )
    missing = np.setdiff1d(np.arange(num_classes), text_labels)
    if missing.size or text_labels.min() < 0 or text_labels.max() >= num_classes:
        raise DataError(
            f"every class needs at least one prompt in [0, {num_classes}); classes without "
            f"prompts: {missing[:10].tolist()}. Add templates or descriptions for them."
        )
    return np.asarray(image_features), text_features, text_labels


def _validate_probs(log_probs, labels, num_classes):
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels).ravel().astype(np.int64)
    if log_probs.ndim != 2 or log_probs.shape[0] != labels.size:
        raise DataError(f"log_probs {log_probs.shape} must be (N, K) with N = {labels.size}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}).")
    return log_probs, labels
