"""Linear probe (DESIGN §2 step 4): balanced multinomial logistic regression on image features.

The objective is exactly scikit-learn's ``LogisticRegression(C=c, class_weight="balanced",
solver="lbfgs")`` for K >= 3 classes::

    sum_i w_i * CE(softmax(W f_i + b), y_i) / sum_i w_i  +  ||W||^2 / (2 * c * sum_i w_i)

with ``w_i = n / (n_present_classes * n_{y_i})`` and the bias unpenalised. We minimise the same
objective with SciPy's L-BFGS-B from zero, but in whitened coordinates: features are centred and
multiplied by ``P = Σ^{-1/2}`` (their covariance's inverse square root), with the weights
reparametrised as ``W = W' Pᵀ``, ``b = b' - W μ`` and the penalty kept as ``||W' Pᵀ||²``. That is
the same objective and the same optimum, only far better conditioned: L-BFGS needs about half the
evaluations, and at ``gtol`` 2e-4 (in whitened coordinates) it ends several times *closer* to the
exact optimum than scikit-learn's own stopping point at ``tol`` 1e-4 (which is up to ~0.08 away in
probability). Each evaluation is one float32 pass (two matrix products, in-place softmax and
residual), and the optimizer's own vector steps run on one BLAS thread so they never compete with
the evaluation's matrix products for cores (see ``_SingleThreadedOptimizerBlas``). ``tests/test_probe.py`` checks the probabilities against a tightly converged
scikit-learn fit and the clean/flagged decision against the default one;
``benchmarks/bench_probe.py`` times both.

Modes: ``"in-sample"`` (the paper: fit on all samples, predict the same samples), ``"cross-val"``
(stratified K-fold, each sample predicted by a probe that never saw it), ``"off"``.
"""
from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from .errors import DataError

log = logging.getLogger(__name__)

PROBE_MODES = ("in-sample", "cross-val", "off")
WHITENED_TOL = 2e-4
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
    tol: float = WHITENED_TOL,
    max_iter: int = 10_000,
) -> LinearProbe:
    """Fit the balanced logistic-regression probe.

    Args:
        features: (N, D) float image features (L2-normalised CLIP embeddings).
        labels: (N,) int given labels in [0, num_classes).
        num_classes: K.
        c: inverse L2 strength, scikit-learn's ``C``.
        tol: L-BFGS ``gtol`` (max |projected gradient|) in whitened coordinates.
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
    probe = _compute_probe(features, labels, num_classes, c, WHITENED_TOL, 10_000)
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
        probe = _compute_probe(features[train], labels[train], num_classes, c, WHITENED_TOL, 10_000)
        out[test] = probe.predict_log_proba(features[test])
        unseen[test] = ~np.isin(labels[test], probe.classes_)
    if unseen.any():
        probe = _compute_probe(features, labels, num_classes, c, WHITENED_TOL, 10_000)
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
    mean, whiten = _whitening(features)
    theta, n_iter, n_evals = _lbfgs(features, y, w, classes.size, l2, mean, whiten, tol, max_iter)
    coef[classes], intercept[classes] = _original_params(theta, classes.size, mean, whiten)
    return LinearProbe(coef, intercept, classes, n_iter, n_evals)


COVARIANCE_ROWS = 8192  # a whitening estimated from a subsample is as exact a reparametrisation


def _whitening(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and whitening matrix P (D, D), float64, with ``(x - mean) @ P`` of ~unit covariance.

    Any invertible P gives the same objective and optimum; a good one only speeds L-BFGS up, so
    the covariance comes from at most ``COVARIANCE_ROWS`` evenly spaced rows. Directions with
    (near-)zero variance (constant or duplicated columns, eigenvalue below 1e-6 of the largest)
    are left unscaled: the data term does not depend on them, only the penalty acts there, and
    scaling them up would make the problem ill-conditioned.
    """
    mean = features.mean(axis=0, dtype=np.float64)
    step = max(1, len(features) // COVARIANCE_ROWS)
    centred = features[::step] - mean.astype(np.float32)
    cov = (centred.T @ centred).astype(np.float64) / max(len(centred), 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    floor = max(float(eigvals.max()), 1e-12) * 1e-6
    scale = np.where(eigvals > floor, 1.0 / np.sqrt(np.maximum(eigvals, floor)), 1.0)
    return mean, eigvecs * scale


def _original_params(theta, k, mean, whiten):
    """Whitened parameters (W', b') -> original (W, b): W = W' Pᵀ, b = b' - W μ."""
    params = theta.reshape(k, whiten.shape[0] + 1)
    weights = params[:, :-1] @ whiten.T
    return weights, params[:, -1] - weights @ mean


def _lbfgs(x, y, w, k, l2, mean, whiten, tol, max_iter):
    loss_grad = _loss_grad(x, y, w, k, l2, mean, whiten)
    theta0 = np.zeros(k * (x.shape[1] + 1))
    with _SingleThreadedOptimizerBlas() as threads:
        result = minimize(
            threads.full(loss_grad), theta0, method="L-BFGS-B", jac=True,
            options={"maxiter": max_iter, "maxls": 50, "gtol": tol,
                     "ftol": 64 * np.finfo(float).eps},
        )
    return result.x, int(result.nit), int(result.nfev)


class _SingleThreadedOptimizerBlas:
    """BLAS at one thread inside L-BFGS-B's own steps, at full threads inside the evaluations.

    SciPy's L-BFGS-B does level-1 BLAS on vectors of K·(D+1) parameters (~51k), far too small to
    gain from threads, and wheels ship SciPy and NumPy each with their own OpenBLAS and thread
    pool. Left threaded, SciPy's pool keeps spinning after each optimizer step while NumPy's pool
    runs the evaluation's matrix products, and on a 2-core machine the products run at half speed
    (66 ms instead of 33 ms each at N=50k, D=512, K=100: the whole fit 2.4 s instead of 1.5 s).
    Limiting every BLAS library to one thread for the optimizer and restoring the counts found
    on entry inside each evaluation works whether NumPy and SciPy share one BLAS or not.

    The thread counts are process-wide, so concurrent fits (threads of one app process) share one
    record: the first to enter saves the counts, the last to leave restores them.
    """

    _lock = threading.Lock()
    _users = 0
    _saved: list = []

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if cls._users == 0:
                from threadpoolctl import ThreadpoolController

                cls._saved = [(lib, lib.num_threads) for lib in
                              ThreadpoolController().select(user_api="blas").lib_controllers]
            cls._users += 1
            self._set_single()
        return self

    def __exit__(self, *exc):
        cls = type(self)
        with cls._lock:
            cls._users -= 1
            if cls._users == 0:
                self._restore()

    def full(self, fun):
        """``fun`` run with the saved thread counts, back to one thread after it returns."""
        def wrapped(*args, **kwargs):
            with self._lock:
                self._restore()
            try:
                return fun(*args, **kwargs)
            finally:
                with self._lock:
                    self._set_single()

        return wrapped

    def _set_single(self):
        for lib, _ in self._saved:
            lib.set_num_threads(1)

    def _restore(self):
        for lib, n in self._saved:
            lib.set_num_threads(n)


def _loss_grad(x, y, w, k, l2, mean, whiten):
    """The objective and its gradient at flat float64 whitened parameters ``theta`` (k, dim + 1).

    Evaluated in the original coordinates, so the whitened features are never materialised: two
    float32 matrix products and an in-place softmax -> weighted residual on one (N, k) buffer, then
    the chain rule through W = W' Pᵀ, b = b' - W μ (small (k, D) @ (D, D) products). The loss is
    summed in float64 (the line search compares losses to ~1e-14 relative).
    """
    rows = np.arange(y.size)
    weight64 = w.astype(np.float64)
    buffer = np.empty((y.size, k), dtype=np.float32)  # reused: no 4·N·k-byte allocation per call

    def loss_grad(theta):
        weights, bias = _original_params(theta, k, mean, whiten)
        logits = np.matmul(x, weights.T.astype(np.float32), out=buffer)
        logits += bias.astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        picked = logits[rows, y]
        np.exp(logits, out=logits)
        norm = logits.sum(axis=1)
        loss = float(weight64 @ (np.log(norm) - picked))
        logits *= (w / norm)[:, None]
        logits[rows, y] -= w
        grad_bias = logits.sum(axis=0, dtype=np.float64)
        grad_weights = (logits.T @ x).astype(np.float64) - np.outer(grad_bias, mean) + l2 * weights
        grad = np.empty((k, whiten.shape[0] + 1))
        grad[:, :-1] = grad_weights @ whiten
        grad[:, -1] = grad_bias
        return loss + 0.5 * l2 * float(np.vdot(weights, weights)), grad.ravel()

    return loss_grad
