"""Per-class two-component 1-D Gaussian mixtures (DESIGN §2 step 6), all classes at once.

For every given class we fit a 2-component Gaussian mixture to that class's loss scores and
report, per sample, the posterior of the component with the larger mean: the *clean
probability*, in [0, 1], higher = more likely correct.

The EM below follows scikit-learn's ``GaussianMixture(n_components=2)`` conventions (k-means
initialisation, ``tol=1e-3`` on the change of the mean log-likelihood, ``reg_covar=1e-6`` added
to each variance, ``max_iter=100``, 10 * eps added to component masses) but runs every class in
the same vectorised numpy pass instead of one estimator per class. The k-means initialisation is
1-D Lloyd started from each class's minimum and maximum, which is deterministic, so no seed is
needed. ``tests/test_gmm.py`` compares it with scikit-learn on the same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError

MAX_ITER = 100
TOL = 1e-3
REG_COVAR = 1e-6
_EPS10 = 10 * np.finfo(np.float64).eps
_LOG_2PI = np.log(2 * np.pi)


@dataclass(frozen=True)
class ClassMixtures:
    """Fitted mixtures: ``means``, ``variances``, ``weights`` (K, 2); ``fitted`` (K,) bool is
    False for classes with fewer than 2 samples or all-equal scores (their samples get clean
    probability 1); ``n_iter`` (K,) EM iterations per class."""

    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray
    fitted: np.ndarray
    n_iter: np.ndarray


def clean_probability(scores: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """(N,) float64 clean probability in [0, 1] (higher = more likely correct).

    Parameters
    ----------
    scores
        (N,) loss scores (any finite reals; higher = more likely clean).
    labels
        (N,) int given labels in [0, num_classes).

    Classes with fewer than 2 samples, or whose scores are all equal, get 1.0.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.gmm import clean_probability
    >>> scores = np.array([0.9, 0.95, 0.92, 0.1, 0.05, 0.5, 0.5])
    >>> labels = np.array([0, 0, 0, 0, 0, 1, 1])  # class 1's scores are all equal
    >>> clean_probability(scores, labels, num_classes=2).round(2).tolist()
    [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    return mixture_posterior(scores, labels, fit_mixtures(scores, labels, num_classes=num_classes))


def mixture_posterior(scores: np.ndarray, labels: np.ndarray, mixtures: ClassMixtures) -> np.ndarray:
    """(N,) clean probability of each sample under already fitted ``mixtures`` (see
    :func:`fit_mixtures`): the posterior of its class's larger-mean component, 1.0 where the class
    has no fitted mixture.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.gmm import fit_mixtures, mixture_posterior
    >>> scores, labels = np.array([0.9, 0.95, 0.92, 0.1, 0.05]), np.zeros(5, dtype=int)
    >>> mixtures = fit_mixtures(scores, labels, num_classes=1)
    >>> mixture_posterior(np.array([0.93, 0.08]), np.array([0, 0]), mixtures).round(2).tolist()
    [1.0, 0.0]
    """
    scores, labels = _validate(scores, labels, len(mixtures.fitted))
    return _compute_clean_probability(scores, labels, mixtures)


def fit_mixtures(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    reg_covar: float = REG_COVAR,
) -> ClassMixtures:
    """Fit one 2-component mixture per class; see :func:`clean_probability`.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.gmm import fit_mixtures
    >>> mixtures = fit_mixtures(np.array([0.9, 0.95, 0.92, 0.1, 0.05]), np.zeros(5, dtype=int),
    ...                         num_classes=2)
    >>> mixtures.fitted.tolist()  # class 1 has no samples: no mixture, its samples keep 1.0
    [True, False]
    """
    scores, labels = _validate(scores, labels, num_classes)
    return _compute_mixtures(scores, labels, num_classes, max_iter, tol, reg_covar)


def clean_probability_sklearn(
    scores: np.ndarray, labels: np.ndarray, *, num_classes: int, seed: int = 0
) -> np.ndarray:
    """Reference: the same quantity with one ``sklearn.mixture.GaussianMixture`` per class
    (what the official code does). Slow; used by tests and benchmarks.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.gmm import clean_probability, clean_probability_sklearn
    >>> rng = np.random.default_rng(0)
    >>> scores = np.concatenate([rng.normal(0.9, 0.03, 40), rng.normal(0.2, 0.05, 10)])
    >>> labels = np.zeros(50, dtype=int)
    >>> ours = clean_probability(scores, labels, num_classes=1)
    >>> reference = clean_probability_sklearn(scores, labels, num_classes=1)
    >>> bool(np.abs(ours - reference).max() < 1e-3)
    True
    """
    from sklearn.mixture import GaussianMixture

    scores, labels = _validate(scores, labels, num_classes)
    out = np.ones(scores.size)
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        values = scores[members]
        if members.size < 2 or np.ptp(values) == 0:
            continue
        mixture = GaussianMixture(n_components=2, random_state=seed).fit(values[:, None])
        posterior = mixture.predict_proba(values[:, None])
        out[members] = posterior[:, int(np.argmax(mixture.means_[:, 0]))]
    return out


def _validate(scores, labels, num_classes):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(np.int64)
    if scores.shape != labels.shape:
        raise DataError(f"scores has {scores.size} entries but labels has {labels.size}.")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or inf; compute loss scores with scoring.loss_score.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}); check num_classes.")
    return scores, labels


def _group_sum(values: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(groups, weights=values, minlength=size)[:size]


def _compute_mixtures(scores, labels, num_classes, max_iter, tol, reg_covar) -> ClassMixtures:
    k = num_classes
    counts = np.bincount(labels, minlength=k)
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    np.minimum.at(lo, labels, scores)
    np.maximum.at(hi, labels, scores)
    fitted = (counts >= 2) & (hi > lo)
    lo, hi = np.where(counts > 0, lo, 0.0), np.where(counts > 0, hi, 0.0)
    upper = _kmeans_split(scores, labels, lo, hi, fitted)
    resp = np.stack([~upper, upper], axis=1).astype(np.float64)
    means, variances, weights = _m_step(scores, labels, resp, counts, k, reg_covar)
    lower_bound = np.full(k, -np.inf)
    active = fitted.copy()
    n_iter = np.zeros(k, dtype=np.int64)
    for _ in range(max_iter):
        if not active.any():
            break
        log_norm, resp = _e_step(scores, labels, means, variances, weights)
        new_means, new_vars, new_weights = _m_step(scores, labels, resp, counts, k, reg_covar)
        means[active], variances[active] = new_means[active], new_vars[active]
        weights[active] = new_weights[active]
        bound = _group_sum(log_norm, labels, k) / np.maximum(counts, 1)
        n_iter[active] += 1
        converged = np.abs(bound - lower_bound) < tol
        lower_bound = np.where(active, bound, lower_bound)
        active &= ~converged
    return ClassMixtures(means, variances, weights, fitted, n_iter)


def _kmeans_split(scores, labels, lo, hi, fitted, max_iter: int = 300) -> np.ndarray:
    """1-D two-centre Lloyd per class from (min, max); returns (N,) bool "in the upper cluster"."""
    k = lo.size
    c_lo, c_hi = lo.copy(), hi.copy()
    upper = np.zeros(scores.size, dtype=bool)
    n_all = np.bincount(labels, minlength=k)[:k].astype(np.float64)
    s_all = _group_sum(scores, labels, k)
    for step in range(max_iter):
        cut = 0.5 * (c_lo + c_hi)
        new_upper = scores > cut[labels]
        if step > 0 and np.array_equal(new_upper, upper):
            break
        upper = new_upper
        n_up = _group_sum(upper.astype(np.float64), labels, k)
        s_up = _group_sum(scores * upper, labels, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            c_hi = np.where(n_up > 0, s_up / n_up, c_hi)
            c_lo = np.where(n_all - n_up > 0, (s_all - s_up) / (n_all - n_up), c_lo)
    upper &= fitted[labels]
    return upper


def _m_step(scores, labels, resp, counts, k, reg_covar):
    mass = np.stack([_group_sum(resp[:, j], labels, k) for j in range(2)], axis=1) + _EPS10
    sums = np.stack([_group_sum(resp[:, j] * scores, labels, k) for j in range(2)], axis=1)
    means = sums / mass
    diff2 = (scores[:, None] - means[labels]) ** 2
    sq = np.stack([_group_sum(resp[:, j] * diff2[:, j], labels, k) for j in range(2)], axis=1)
    variances = sq / mass + reg_covar
    weights = mass / mass.sum(axis=1, keepdims=True)
    return means, variances, weights


def _e_step(scores, labels, means, variances, weights):
    mu, var, w = means[labels], variances[labels], weights[labels]
    log_prob = -0.5 * (_LOG_2PI + np.log(var) + (scores[:, None] - mu) ** 2 / var) + np.log(w)
    log_norm = np.logaddexp(log_prob[:, 0], log_prob[:, 1])
    return log_norm, np.exp(log_prob - log_norm[:, None])


def _compute_clean_probability(scores, labels, mixtures: ClassMixtures) -> np.ndarray:
    _, resp = _e_step(scores, labels, mixtures.means, mixtures.variances, mixtures.weights)
    clean_comp = np.argmax(mixtures.means, axis=1)[labels]
    out = resp[np.arange(scores.size), clean_comp]
    return np.where(mixtures.fitted[labels], out, 1.0)
