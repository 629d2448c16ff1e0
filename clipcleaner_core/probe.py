"""Linear probe (DESIGN §2 step 4): balanced multinomial logistic regression on image features.

The objective is exactly scikit-learn's ``LogisticRegression(C=c, class_weight="balanced",
solver="lbfgs")`` for K >= 3 classes::

    sum_i w_i * CE(softmax(W f_i + b), y_i) / sum_i w_i  +  ||W||^2 / (2 * c * sum_i w_i)

with ``w_i = n / (n_present_classes * n_{y_i})`` and the bias unpenalised. We minimise it as the
library does (SciPy's L-BFGS-B from zero, same ``gtol``, ``maxls``, ``ftol`` and ``max_iter``), so
both take the same iterates and stop at the same point; only the loss/gradient evaluation is ours:
one float32 pass (two matrix products, in-place softmax and residual), about 1.3x faster per
evaluation on CLIP-sized inputs (``benchmarks/bench_probe.py``). ``tests/test_probe.py`` checks probabilities
and the clean/flagged decision against scikit-learn.

Modes: ``"in-sample"`` (the paper: fit on all samples, predict the same samples), ``"cross-val"``
(stratified K-fold, each sample predicted by a probe that never saw it), ``"off"``.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from .errors import DataError

log = logging.getLogger(__name__)

PROBE_MODES = ("in-sample", "cross-val", "off")
Progress = Callable[[str, int, int, "float | None"], None]


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: ``coef_`` (K, D), ``intercept_`` (K,), ``classes_`` (K',) fitted classes,
    ``n_iter_`` L-BFGS iterations and ``n_evals_`` loss/gradient evaluations.

    Classes absent from the training labels get probability 0 (log-probability -inf).
    """

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    n_iter_: int
    n_evals_: int = 0

    def predict_log_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, K) float64 log-probabilities over all ``num_classes`` classes."""
        logits = np.asarray(features, dtype=np.float32) @ self.coef_.T + self.intercept_
        logits = logits.astype(np.float64)
        absent = ~np.isin(np.arange(self.coef_.shape[0]), self.classes_)
        logits[:, absent] = -np.inf
        return log_softmax(logits, axis=1)


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    c: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 10_000,
) -> LinearProbe:
    """Fit the balanced logistic-regression probe.

    Args:
        features: (N, D) float image features (L2-normalised CLIP embeddings).
        labels: (N,) int given labels in [0, num_classes).
        num_classes: K.
        c: inverse L2 strength, scikit-learn's ``C``.
        tol: L-BFGS ``gtol`` (max |projected gradient|), as scikit-learn's ``tol``.
    """
    features, labels = _validate(features, labels, num_classes)
    if c <= 0:
        raise ValueError(f"c={c!r} must be > 0 (it is the inverse L2 penalty strength).")
    return _compute_probe(features, labels, num_classes, c, tol, max_iter)


def probe_log_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    mode: str = "in-sample",
    n_folds: int = 5,
    c: float = 1.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> np.ndarray | None:
    """(N, K) float64 log-probabilities of the probe, or None when ``mode == "off"``.

    ``"cross-val"`` uses ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``. Fallbacks
    for tiny classes: the number of folds drops to the size of the largest class (in-sample when
    that is below 2), and samples whose class has no other member to learn from are predicted
    in-sample by a probe fitted on all samples.
    """
    if mode not in PROBE_MODES:
        raise ValueError(f"unknown probe mode {mode!r}; valid modes: {', '.join(PROBE_MODES)}.")
    if mode == "off":
        return None
    features, labels = _validate(features, labels, num_classes)
    if mode == "in-sample":
        return _in_sample(features, labels, num_classes, c, progress)
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r} must be >= 2 for cross-val mode.")
    return _cross_val(features, labels, num_classes, c, n_folds, seed, progress)


def _validate(features, labels, num_classes):
    features = np.ascontiguousarray(features, dtype=np.float32)
    labels = np.asarray(labels).ravel()
    if features.ndim != 2:
        raise DataError(f"features must be a 2-D (N, D) array, got shape {features.shape}.")
    if labels.shape[0] != features.shape[0]:
        raise DataError(
            f"features has {features.shape[0]} rows but labels has {labels.shape[0]} entries; "
            "pass one label per feature row."
        )
    if labels.size == 0:
        raise DataError("no samples to fit the probe on; the dataset is empty.")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"labels must lie in [0, {num_classes}) but range over [{labels.min()}, "
            f"{labels.max()}]; check num_classes or the label mapping."
        )
    if not np.isfinite(features).all():
        raise DataError("features contain NaN or inf; drop or re-embed the broken rows.")
    return features, labels


def _in_sample(features, labels, num_classes, c, progress):
    _report(progress, 0, 1)
    probe = _compute_probe(features, labels, num_classes, c, 1e-4, 10_000)
    _report(progress, 1, 1)
    return probe.predict_log_proba(features)


def _cross_val(features, labels, num_classes, c, n_folds, seed, progress):
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=num_classes)
    n_splits = min(n_folds, int(counts.max()))
    if n_splits < 2:
        log.warning("cross-val probe: every class has one sample; predicting in-sample instead")
        return _in_sample(features, labels, num_classes, c, progress)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    out = np.empty((labels.size, num_classes))
    unseen = np.zeros(labels.size, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(folds.split(np.zeros(labels.size), labels))
    for fold, (train, test) in enumerate(splits):
        _report(progress, fold, n_splits + 1)
        probe = _compute_probe(features[train], labels[train], num_classes, c, 1e-4, 10_000)
        out[test] = probe.predict_log_proba(features[test])
        unseen[test] = ~np.isin(labels[test], probe.classes_)
    if unseen.any():
        probe = _compute_probe(features, labels, num_classes, c, 1e-4, 10_000)
        out[unseen] = probe.predict_log_proba(features[unseen])
    _report(progress, n_splits + 1, n_splits + 1)
    return out


def _report(progress, done, total):
    if progress is not None:
        progress("probe", done, total, None)


def _compute_probe(features, labels, num_classes, c, tol, max_iter) -> LinearProbe:
    """Trusting core: fit on the classes present in ``labels`` and embed into K classes."""
    classes, y = np.unique(labels, return_inverse=True)
    n, dim = features.shape
    coef = np.zeros((num_classes, dim), dtype=np.float32)
    intercept = np.zeros(num_classes, dtype=np.float32)
    if classes.size < 2:
        return LinearProbe(coef, intercept, classes, 0, 0)
    counts = np.bincount(y)
    weights = (n / (classes.size * counts))[y]
    sw_sum = float(weights.sum())
    w = (weights / sw_sum).astype(np.float32)
    l2 = 1.0 / (c * sw_sum)
    theta, n_iter, n_evals = _lbfgs(features, y, w, classes.size, l2, tol, max_iter)
    params = theta.reshape(classes.size, dim + 1)
    coef[classes] = params[:, :dim]
    intercept[classes] = params[:, dim]
    return LinearProbe(coef, intercept, classes, n_iter, n_evals)


def _lbfgs(x, y, w, k, l2, tol, max_iter):
    loss_grad = _loss_grad(x, y, w, k, l2)
    theta0 = np.zeros(k * (x.shape[1] + 1))
    result = minimize(
        loss_grad, theta0, method="L-BFGS-B", jac=True,
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    return result.x, int(result.nit), int(result.nfev)


def _loss_grad(x, y, w, k, l2):
    """The objective and its gradient at a flat float64 ``theta`` of (k, dim + 1) parameters.

    Two float32 matrix products and an in-place softmax -> weighted residual on one (N, k) buffer;
    the loss is summed in float64 (the line search compares losses to ~1e-14 relative).
    """
    dim = x.shape[1]
    rows = np.arange(y.size)
    weight64 = w.astype(np.float64)

    def loss_grad(theta):
        params = theta.reshape(k, dim + 1)
        params32 = params.astype(np.float32)
        logits = x @ params32[:, :dim].T
        logits += params32[:, dim]
        logits -= logits.max(axis=1, keepdims=True)
        picked = logits[rows, y]
        np.exp(logits, out=logits)
        norm = logits.sum(axis=1)
        loss = float(weight64 @ (np.log(norm) - picked))
        logits *= (w / norm)[:, None]
        logits[rows, y] -= w
        return _add_penalty(loss, logits.T @ x, logits.sum(axis=0), params, l2)

    return loss_grad


def _add_penalty(loss, grad_coef, grad_bias, params, l2):
    """Add the L2 term on the coefficients (not the bias); return (loss, flat float64 grad)."""
    coef = params[:, :-1]
    grad = np.empty(params.shape)
    grad[:, :-1] = grad_coef
    grad[:, :-1] += l2 * coef
    grad[:, -1] = grad_bias
    return loss + 0.5 * l2 * float(np.vdot(coef, coef)), grad.ravel()
