"""Linear probe (DESIGN §2 step 4): balanced multinomial logistic regression on image features.

The objective is exactly scikit-learn's ``LogisticRegression(C=c, class_weight="balanced",
solver="lbfgs")`` for K >= 3 classes::

    sum_i w_i * CE(softmax(W f_i + b), y_i) / sum_i w_i  +  ||W||^2 / (2 * c * sum_i w_i)

with ``w_i = n / (n_present_classes * n_{y_i})`` and the bias unpenalised. We minimise the same
objective with SciPy's L-BFGS-B from zero, in preconditioned coordinates: ``W = W' P``,
``b = b' - W μ`` with ``μ`` the features' (balanced) mean, and the penalty kept as ``||W' P||²``.
Any invertible P gives the same objective and the same optimum; a good one makes the Hessian close
to a multiple of the identity. Near the start the Hessian in W is about ``s Σ + l2 I`` with Σ the
features' covariance, ``s ≈ 1/K`` (softmax curvature at uniform probabilities) and
``l2 = 1 / (c Σ_i w_i)``, so P is the inverse square root of the *regularised* covariance
``Σ + ρ I`` with ``ρ = K · l2`` (Σ replaced by its top K + 32 eigenpairs plus the mean of the
rest, see ``_Preconditioner``). Directions with variance well above ρ are whitened; directions
with little or none (constant or duplicated columns, the tail of a power-law spectrum) are scaled
by at most ``1/sqrt(ρ)``. Whitening (``P = Σ^{-1/2}``, the previous method, which left only
eigenvalues below 1e-6 of the largest unscaled) scales them by up to ``1/sqrt(λ)`` and leaves the
penalty badly conditioned there: with the ridge shrunk a million-fold, the inputs of
``tests/test_probe.py`` take 1,300-1,500 iterations where scikit-learn needs 50-1,800 and this
needs 10-50; and its D x D eigendecomposition alone took longer than scikit-learn's whole fit on
the demo's 768-d pixels. Against scikit-learn's default fit (tol 1e-4) on the same inputs it needs
9 instead of 42 iterations on the demo's pixel features, 42 instead of 1,229 on raw digits and
9-12 instead of 22-77 on CLIP-like and isotropic features, and ends closer to the optimum on every
case (``benchmarks/bench_probe.py`` prints both).

Memory grows with N, not N x K: each evaluation walks the rows in chunks of at most ``CHUNK_ROWS``
rows and ``CHUNK_BYTES`` of float32 work (two matrix products, in-place softmax and residual per
chunk), so a small problem is one pass and ImageNet-1k (1.28M x 1,000) needs ~256 MB beyond its
features. Features are never copied as a whole: float32 C-contiguous arrays and read-only memmaps are
read in place, other dtypes (float16) are converted chunk by chunk. The optimizer's own vector steps
run on one BLAS thread so they never compete with the evaluation's matrix products for cores (see
``_SingleThreadedOptimizerBlas``). ``tests/test_probe.py`` checks the probabilities against a
tightly converged scikit-learn fit and the clean/flagged decision against the default one;
``benchmarks/bench_probe.py`` times both on isotropic, pixel, raw-digit and CLIP-like spectra.

Modes: ``"in-sample"`` (the paper: fit on all samples, predict the same samples), ``"cross-val"``
(stratified K-fold, each sample predicted by a probe that never saw it), ``"off"``.
:func:`fit_probe_predictor` returns a :class:`ProbePredictor` whose ``log_proba(start, stop)`` gives
the log-probabilities of a row range without ever materialising the (N, K) matrix.
"""
from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from . import accel
from .errors import Cancelled, ConfigError, DataError

log = logging.getLogger(__name__)

PROBE_MODES = ("in-sample", "cross-val", "off")
#: L-BFGS gtol in preconditioned coordinates, where the Hessian is ~ I/K on every feature scale: on
#: the demo's pixels and raw digits it ends 3e-7 and 9e-6 from the optimum in objective, where
#: scikit-learn's default stops 1.1e-5 and 4.8e-5 away
PRECONDITIONED_TOL = 1e-4


def default_tol(num_classes: int) -> float:
    """The gtol a fit of ``num_classes`` fitted classes stops at: ``PRECONDITIONED_TOL`` up to 100
    classes, ``1e-2 / K`` above. The gradient's entries shrink like 1/K (each class's share of the
    residual), so a fixed gtol stops early with many classes: at 40k x 512, K=1,000 (CLIP-like),
    1e-4 stopped after 6 iterations with 99.80 % of the clean/flagged decisions of a tightly
    converged fit, 1e-5 after 10 with 99.99 %; at K=100 1e-4 already gives every decision."""
    return min(PRECONDITIONED_TOL, 1e-2 / max(int(num_classes), 1))
#: rows per evaluation chunk, and bytes of float32 work per chunk ((rows, K) logits + converted rows)
CHUNK_ROWS = 65_536
CHUNK_BYTES = 256 * 2**20
COVARIANCE_ROWS = 1024  # a preconditioner estimated from a subsample is as exact a reparametrisation
PRECONDITIONER_RANK = 64  # eigenpairs kept at least (see _preconditioner_rank)
ITERATIONS_ESTIMATE = 40  # progress: L-BFGS iterations one fit is expected to take (9-42 measured)
PROGRESS_INTERVAL_S = 0.25
#: N x D x K up to which a whole fit runs on one BLAS thread: its products are too small to gain
#: from threads, and on a busy machine the pool's hand-offs cost more than the work (1,797 x 768,
#: K=10: 0.20 s on one thread vs 1.02 s on two at load 10; 10k x 512, K=10: 0.43 vs 0.90 s)
SINGLE_THREAD_WORK = 100_000_000
Progress = Callable[[str, int, int, "float | None"], None]
Cancel = Callable[[], bool]


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


@dataclass(frozen=True)
class ProbePredictor:
    """The probe's log-probabilities of any row range, computed on demand.

    ``features`` is the caller's (N, D) array itself (never copied); ``probes`` the fitted probes
    and ``row_probe`` (N,) the index of the probe that predicts each row (None: ``probes[0]`` for
    every row). In cross-val mode row i is predicted by the probe of the fold that held it out, or
    by a probe fitted on all samples when its class had no other member to learn from.
    """

    features: np.ndarray
    probes: tuple[LinearProbe, ...]
    row_probe: np.ndarray | None
    mode: str
    device_rows: object = None  # accel.DeviceRows: log_proba_tensor runs on its device
    _device_params: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.probes[0].coef_.shape[0])

    def log_proba(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, K) float64 log-probabilities of rows ``start:stop`` (-inf for classes the
        predicting probe never saw); rows sum to 1 in probability."""
        if not 0 <= start <= stop <= self.n_rows:
            raise ValueError(f"row range {start}:{stop} is outside 0:{self.n_rows}.")
        rows = self.features[start:stop]
        if self.row_probe is None:
            return self.probes[0].predict_log_proba(rows)
        which = self.row_probe[start:stop]
        out = np.empty((stop - start, self.num_classes))
        for index in np.unique(which):
            mask = which == index
            out[mask] = self.probes[index].predict_log_proba(rows[mask])
        return out

    def log_proba_tensor(self, start: int, stop: int):
        """As :meth:`log_proba`, as a float64 tensor on the device of ``device_rows``."""
        import torch

        x = self.device_rows.block(start, stop)
        if self.row_probe is None:
            return self._device_log_proba(0, x)
        which = torch.from_numpy(self.row_probe[start:stop].astype(np.int64)).to(x.device)
        out = torch.empty((stop - start, self.num_classes), dtype=torch.float64, device=x.device)
        for index in np.unique(self.row_probe[start:stop]):
            mask = which == int(index)
            out[mask] = self._device_log_proba(int(index), x[mask])
        return out

    def _device_log_proba(self, index, x):
        import torch

        if index not in self._device_params:
            probe = self.probes[index]
            absent = ~np.isin(np.arange(probe.coef_.shape[0]), probe.classes_)
            self._device_params[index] = (
                accel.to_device(probe.coef_.T, x.device, np.float32),
                accel.to_device(np.where(absent, -np.inf, probe.intercept_), x.device,
                                np.float32))
        coef, intercept = self._device_params[index]
        return torch.log_softmax(torch.addmm(intercept, x, coef).double(), dim=1)


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    c: float = 1.0,
    tol: float | None = None,
    max_iter: int = 10_000,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    device: "str | accel.DeviceRows" = "auto",
) -> LinearProbe:
    """Fit the balanced logistic-regression probe.

    Parameters
    ----------
    features
        (N, D) float image features (L2-normalised CLIP embeddings); float32, float16 or
        a read-only memmap are read in row chunks, never copied whole.
    labels
        (N,) int given labels in [0, num_classes).
    num_classes
        K.
    c
        inverse L2 strength, scikit-learn's ``C``.
    tol
        L-BFGS ``gtol`` (max |projected gradient|) in preconditioned coordinates; None:
        :func:`default_tol` of the number of classes present.
    progress
        ``progress("probe", iterations, estimate, iterations_per_s)``.
    cancel
        polled between iterations; True raises :class:`~clipcleaner_core.errors.Cancelled`.
    device
        where the loss and gradient are evaluated: ``"auto"`` (a CUDA GPU when torch
        sees one, else NumPy on the CPU), ``"cpu"``, ``"cuda[:N]"``; or the
        :class:`~clipcleaner_core.accel.DeviceRows` of these features, to share one upload.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.probe import fit_probe
    >>> p = make_synthetic_problem(300, 3, 16, noise_rate=0.0, seed=0)
    >>> probe = fit_probe(p["features"], p["labels"], num_classes=3, device="cpu")
    >>> predicted = probe.predict_log_proba(p["features"]).argmax(axis=1)
    >>> probe.coef_.shape, round(float((predicted == p["labels"]).mean()), 2)
    ((3, 16), 1.0)
    """
    features, labels = _validate(features, labels, num_classes)
    _check_c(c)
    rows = _device_rows(features, device)
    monitor = _Monitor(progress, cancel, n_fits=1)
    return _compute_probe(features, None, labels, num_classes, c, tol, max_iter, monitor, rows)


def fit_probe_predictor(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    mode: str = "in-sample",
    n_folds: int = 5,
    c: float = 1.0,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    device: "str | accel.DeviceRows" = "auto",
) -> ProbePredictor | None:
    """Fit the probe(s) of ``mode``; None when ``mode == "off"``.

    ``"cross-val"`` uses ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``. Fallbacks
    for tiny classes: the number of folds drops to the size of the largest class (in-sample when
    that is below 2), and samples whose class has no other member to learn from are predicted
    in-sample by a probe fitted on all samples.

    ``progress("probe", done, total, iterations_per_s)`` counts L-BFGS iterations over all fits
    (``total`` = fits x an estimate per fit; ``done`` never decreases nor passes ``total``), at most
    a few times per second. ``cancel()`` is polled between iterations; True raises
    :class:`~clipcleaner_core.errors.Cancelled`. ``device`` as in :func:`fit_probe`; on a device
    the predictor's ``log_proba_tensor`` gives row chunks there too.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.probe import fit_probe_predictor
    >>> p = make_synthetic_problem(300, 3, 16, seed=0)
    >>> predictor = fit_probe_predictor(p["features"], p["labels"], num_classes=3, mode="cross-val",
    ...                                 device="cpu")
    >>> predictor.log_proba(0, 5).shape  # any row chunk, (rows, K)
    (5, 3)
    >>> fit_probe_predictor(p["features"], p["labels"], num_classes=3, mode="off") is None
    True
    >>> fit_probe_predictor(p["features"], p["labels"], num_classes=3, mode="kfold")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.ConfigError: ...in-sample...cross-val...off...
    """
    if mode not in PROBE_MODES:
        raise ConfigError(f"unknown probe mode {mode!r}; valid modes: {', '.join(PROBE_MODES)}.")
    if mode == "off":
        return None
    features, labels = _validate(features, labels, num_classes)
    _check_c(c)
    if mode == "cross-val" and n_folds < 2:
        raise ConfigError(f"n_folds={n_folds!r} must be >= 2 for cross-val mode.")
    rows = _device_rows(features, device)
    if mode == "in-sample":
        return _in_sample(features, labels, num_classes, c, progress, cancel, rows)
    return _cross_val(features, labels, num_classes, c, n_folds, seed, progress, cancel, rows)


def _device_rows(features, device):
    """The features on the fit's device (:class:`accel.DeviceRows`), or None for NumPy."""
    if isinstance(device, accel.DeviceRows):
        return device
    target = accel.fit_device(device)
    return None if target is None else accel.DeviceRows(features, target)


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

    The whole matrix at once, for small inputs; large ones use :func:`fit_probe_predictor` and
    read row chunks. Modes and fallbacks as there.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.probe import probe_log_probabilities
    >>> p = make_synthetic_problem(200, 4, 16, seed=0)
    >>> log_p = probe_log_probabilities(p["features"], p["labels"], num_classes=4)
    >>> log_p.shape, bool(np.allclose(np.exp(log_p).sum(axis=1), 1.0))
    ((200, 4), True)
    """
    predictor = fit_probe_predictor(features, labels, num_classes=num_classes, mode=mode,
                                    n_folds=n_folds, c=c, seed=seed, progress=progress)
    if predictor is None:
        return None
    return predictor.log_proba(0, predictor.n_rows)


def _check_c(c):
    if not c > 0:
        raise ConfigError(f"c={c!r} must be > 0 (it is the inverse L2 penalty strength).")


def _validate(features, labels, num_classes):
    features = np.asarray(features)  # no copy for arrays and memmaps; rows are converted per chunk
    labels = np.asarray(labels).ravel()
    if features.ndim != 2:
        raise DataError(f"features must be a 2-D (N, D) array, got shape {features.shape}.")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise DataError(f"features must be real numbers (float32 or float16), got dtype "
                        f"{features.dtype}; convert them with features.astype('float32').")
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
    if np.issubdtype(features.dtype, np.floating):
        step = _chunk_rows(0, features.shape[1])
        for start in range(0, features.shape[0], step):
            block = features[start:start + step]
            if not np.isfinite(block).all():
                bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise DataError(f"features contain NaN or inf (first at row {bad}); drop or "
                                "re-embed the broken rows.")
    return features, labels


def _in_sample(features, labels, num_classes, c, progress, cancel, device_rows=None):
    monitor = _Monitor(progress, cancel, n_fits=1)
    probe = _compute_probe(features, None, labels, num_classes, c, None, 10_000,
                           monitor, device_rows)
    monitor.finish()
    return ProbePredictor(features, (probe,), None, "in-sample", device_rows)


def _cross_val(features, labels, num_classes, c, n_folds, seed, progress, cancel,
               device_rows=None):
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=num_classes)
    n_splits = min(n_folds, int(counts.max()))
    if n_splits < 2:
        log.warning("cross-val probe: every class has one sample; predicting in-sample instead")
        return _in_sample(features, labels, num_classes, c, progress, cancel, device_rows)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(folds.split(np.zeros((labels.size, 1), dtype=np.int8), labels))
    row_probe = np.empty(labels.size, dtype=np.int16)
    unseen = np.zeros(labels.size, dtype=bool)
    for fold, (train, test) in enumerate(splits):
        row_probe[test] = fold
        unseen[test] = ~np.isin(labels[test], labels[train])
    monitor = _Monitor(progress, cancel, n_fits=n_splits + int(unseen.any()))
    probes = []
    for train, _ in splits:
        probes.append(_compute_probe(features, train, labels[train], num_classes, c,
                                     None, 10_000, monitor, device_rows))
    if unseen.any():
        probes.append(_compute_probe(features, None, labels, num_classes, c, None,
                                     10_000, monitor, device_rows))
        row_probe[unseen] = n_splits
    monitor.finish()
    return ProbePredictor(features, tuple(probes), row_probe, "cross-val", device_rows)


class _Monitor:
    """Progress over all fits of one call (iterations against fits x ``ITERATIONS_ESTIMATE``) and
    the cancel poll. Each fit owns ``ITERATIONS_ESTIMATE`` units of ``total``; a fit that runs
    longer stays at the end of its share until it finishes, so ``done`` never decreases nor passes
    ``total``."""

    def __init__(self, progress, cancel, *, n_fits):
        self.progress, self.cancel = progress, cancel
        self.total = n_fits * ITERATIONS_ESTIMATE
        self.fits_done = 0
        self.iterations = 0  # of all fits, for the rate
        self.started = time.perf_counter()
        self.last_report = -np.inf
        self.done = 0
        self._report(0, force=True)

    def check_cancel(self):
        if self.cancel is not None and self.cancel():
            raise Cancelled("probe fit cancelled; nothing was saved.")

    def iteration(self, in_fit):
        """Called after iteration ``in_fit`` (1-based) of the current fit."""
        self.iterations += 1
        self.check_cancel()
        share = min(in_fit, ITERATIONS_ESTIMATE - 1)
        self._report(self.fits_done * ITERATIONS_ESTIMATE + share)

    def fit_done(self):
        self.fits_done += 1
        self._report(self.fits_done * ITERATIONS_ESTIMATE)

    def finish(self):
        self._report(self.total, force=True)

    def _report(self, done, force=False):
        done = max(self.done, min(done, self.total))
        changed, self.done = done != self.done, done
        if self.progress is None or not (changed or force):
            return
        now = time.perf_counter()
        if force or now - self.last_report >= PROGRESS_INTERVAL_S:
            self.last_report = now
            elapsed = now - self.started
            rate = self.iterations / elapsed if self.iterations and elapsed > 0 else None
            self.progress("probe", int(done), int(self.total), rate)


def _compute_probe(features, rows, labels, num_classes, c, tol, max_iter, monitor,
                   device_rows=None) -> LinearProbe:
    """Trusting core: fit on ``features[rows]`` (all rows when None) with their ``labels``, on the
    classes present in ``labels``, and embed into K classes."""
    classes, y = np.unique(labels, return_inverse=True)
    dim = features.shape[1]
    n = y.size
    coef = np.zeros((num_classes, dim), dtype=np.float32)
    intercept = np.zeros(num_classes, dtype=np.float32)
    if classes.size < 2:
        monitor.fit_done()
        return LinearProbe(coef, intercept, classes, 0, 0)
    counts = np.bincount(y)
    weights = (n / (classes.size * counts))[y]
    sw_sum = float(weights.sum())
    w = (weights / sw_sum).astype(np.float32)
    l2 = 1.0 / (c * sw_sum)
    source = _RowSource(features, rows, _chunk_rows(classes.size, dim))
    single = device_rows is None and n * dim * classes.size <= SINGLE_THREAD_WORK
    with _SingleThreadedOptimizerBlas() as threads:
        threaded = (lambda fun: fun) if single else threads.full
        precond = threaded(_preconditioner)(source, w, l2 * classes.size,
                                            _preconditioner_rank(classes.size))
        if device_rows is None:
            loss_grad = _loss_grad(source, y, w, classes.size, l2, precond, monitor)
        else:
            loss_grad = _device_loss_grad(device_rows, rows, y, w, classes.size, l2, precond,
                                          monitor, source.chunk)
        tol = default_tol(classes.size) if tol is None else tol
        theta, n_iter, n_evals = _lbfgs(threaded(loss_grad), classes.size, precond, tol,
                                        max_iter, monitor)
    coef[classes], intercept[classes] = _original_params(theta, classes.size, precond)
    monitor.fit_done()
    return LinearProbe(coef, intercept, classes, n_iter, n_evals)


def _chunk_rows(k, dim):
    """Rows per chunk: ``CHUNK_ROWS`` at most, and (rows, k) logits plus (rows, dim) converted
    features of float32 within ``CHUNK_BYTES``."""
    return int(max(1, min(CHUNK_ROWS, CHUNK_BYTES // (4 * (k + dim)))))


class _RowSource:
    """float32 row blocks of ``features[rows]`` (all rows when ``rows`` is None), never a copy of
    the whole matrix: float32 C-contiguous slices are views; other dtypes and row subsets are
    converted or gathered into one reused chunk buffer. A subset small enough to be one chunk is
    gathered once and kept."""

    def __init__(self, features, rows, chunk):
        self.features, self.rows, self.chunk = features, rows, chunk
        self.n = features.shape[0] if rows is None else rows.size
        self._buffer = None
        self._kept = None
        in_place = rows is None and features.dtype == np.float32 and features.flags.c_contiguous
        if not in_place and self.n <= chunk:
            self._kept = self._gather(0, self.n, np.empty((self.n, features.shape[1]), np.float32))

    def blocks(self):
        """Yields ``(start, stop, x)`` with ``x`` the (stop - start, D) float32 rows."""
        for start in range(0, self.n, self.chunk):
            stop = min(start + self.chunk, self.n)
            yield start, stop, self.block(start, stop)

    def block(self, start, stop):
        if self._kept is not None:
            return self._kept[start:stop]
        if self.rows is None and self.features.dtype == np.float32:
            view = self.features[start:stop]
            if view.flags.c_contiguous:
                return view
        if self._buffer is None:
            self._buffer = np.empty((min(self.chunk, self.n), self.features.shape[1]), np.float32)
        return self._gather(start, stop, self._buffer[:stop - start])

    def sample(self, count):
        """``count`` evenly spaced rows (indices into the source) and their float32 features."""
        picked = np.unique(np.linspace(0, self.n - 1, min(count, self.n)).astype(np.int64))
        index = picked if self.rows is None else self.rows[picked]
        return picked, np.asarray(self.features[index], dtype=np.float32)

    def _gather(self, start, stop, out):
        if self.rows is None:
            out[...] = self.features[start:stop]
        elif self.features.dtype == np.float32:
            np.take(self.features, self.rows[start:stop], axis=0, out=out)
        else:
            out[...] = self.features[self.rows[start:stop]]
        return out


class _Preconditioner:
    """The symmetric preconditioner ``P = V diag(1/sqrt(λ + ridge)) Vᵀ + (I - V Vᵀ) / sqrt(rest +
    ridge)`` with V (D, r) orthonormal top eigenvectors of the features' covariance Σ, λ their
    eigenvalues and ``rest`` the mean eigenvalue of the other directions: P² is the inverse of the
    regularised covariance with Σ replaced by its top-r part plus the average of the rest (exact
    when r = D). Applying it to a (k, D) matrix costs 2·k·D·r."""

    def __init__(self, mean, eigvecs, eigvals, rest, ridge):
        self.mean, self.eigvecs = mean, eigvecs
        self.base = 1.0 / np.sqrt(rest + ridge)
        self.shrink = 1.0 / np.sqrt(eigvals + ridge) - self.base

    @property
    def dim(self) -> int:
        return self.eigvecs.shape[0]

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """``matrix @ P`` for a (k, D) float64 matrix."""
        return matrix * self.base + ((matrix @ self.eigvecs) * self.shrink) @ self.eigvecs.T


def _preconditioner_rank(k: int) -> int:
    """Eigenpairs the preconditioner keeps for k classes: their centres add up to k - 1 strong
    directions (on isotropic 100-class blobs the top 64 alone took 15 iterations instead of 10)."""
    return max(PRECONDITIONER_RANK, k + PRECONDITIONER_RANK // 2)


def _preconditioner(source, w, ridge, rank) -> _Preconditioner:
    """The preconditioner of ``Σ + ridge I`` for the features' balanced covariance Σ, with its mean.

    Any invertible P gives the same objective and optimum (the evaluation applies the same P
    forwards and backwards); a good one only speeds L-BFGS up. So the mean and covariance come
    from ``COVARIANCE_ROWS`` evenly spaced rows weighted by the balanced sample weights (as few
    iterations as with 8x more rows on every benchmark case), and only the top ``rank`` eigenpairs
    are kept, the other directions scaled alike by their mean variance plus the ridge (on a
    power-law spectrum that variance is far below the ridge; on a flat one it is each one's). The
    eigenpairs come from a seeded randomized range finder with one power iteration (Halko et
    al.), exact when D or the row count is small; on the demo's 768-d pixels a full covariance,
    Cholesky factor and triangular inverse took longer than the whole L-BFGS run.
    """
    picked, x = source.sample(COVARIANCE_ROWS)
    weight = w[picked].astype(np.float64)
    weight /= weight.sum()
    mean = weight @ x
    scaled = (x - mean.astype(np.float32)) * np.sqrt(weight, dtype=np.float32)[:, None]
    width = rank + min(16, rank)  # oversampled sketch
    if min(scaled.shape) <= width:
        _, singular, basis_t = np.linalg.svd(scaled.astype(np.float64), full_matrices=False)
        return _Preconditioner(mean, basis_t.T, singular ** 2, 0.0, ridge)
    sketch = np.random.default_rng(0).standard_normal((scaled.shape[1], width)).astype(np.float32)
    basis = np.linalg.qr((scaled.T @ (scaled @ sketch)).astype(np.float64))[0]
    basis = np.linalg.qr((scaled.T @ (scaled @ basis.astype(np.float32))).astype(np.float64))[0]
    projected = (scaled @ basis.astype(np.float32)).astype(np.float64)
    eigvals, rotation = np.linalg.eigh(projected.T @ projected)  # Σ restricted to the basis
    top = np.argsort(eigvals)[::-1][:rank]
    eigvals = np.maximum(eigvals[top], 0.0)
    total = float(np.einsum("ij,ij->", scaled, scaled, dtype=np.float64))  # trace of Σ
    rest = max(total - float(eigvals.sum()), 0.0) / (scaled.shape[1] - eigvals.size)
    return _Preconditioner(mean, basis @ rotation[:, top], eigvals, rest, ridge)


def _original_params(theta, k, precond):
    """Preconditioned parameters (W', b') -> original (W, b): W = W' P, b = b' - W μ."""
    params = theta.reshape(k, precond.dim + 1)
    weights = precond.apply(params[:, :-1])
    return weights, params[:, -1] - weights @ precond.mean


def _lbfgs(loss_grad, k, precond, tol, max_iter, monitor):
    theta0 = np.zeros(k * (precond.dim + 1))
    iterations = [0]

    def after_iteration(_):
        iterations[0] += 1
        monitor.iteration(iterations[0])

    result = minimize(
        loss_grad, theta0, method="L-BFGS-B", jac=True, callback=after_iteration,
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
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


def _loss_grad(source, y, w, k, l2, precond, monitor):
    """The objective and its gradient at flat float64 preconditioned parameters ``theta``
    (k, dim + 1).

    Evaluated in the original coordinates, so the preconditioned features are never materialised:
    per row chunk two float32 matrix products and an in-place softmax -> weighted residual on one
    reused (rows, k) buffer, then the chain rule through W = W' Pᵀ, b = b' - W μ (small
    (k, D) @ (D, D) products). The loss is summed in float64 (the line search compares losses to
    ~1e-14 relative).
    """
    weight64 = w.astype(np.float64)
    buffer = np.empty((min(source.chunk, y.size), k), dtype=np.float32)
    positions = np.arange(buffer.shape[0])
    x_first = k < precond.dim

    def loss_grad(theta):
        monitor.check_cancel()
        weights, bias = _original_params(theta, k, precond)
        weights32, bias32 = weights.T.astype(np.float32), bias.astype(np.float32)
        loss = 0.0
        grad_weights = np.zeros((k, precond.dim))
        grad_bias = np.zeros(k)
        for start, stop, x in source.blocks():
            logits = np.matmul(x, weights32, out=buffer[:stop - start])
            rows, labels, wc = positions[:stop - start], y[start:stop], w[start:stop]
            logits += bias32
            logits -= logits.max(axis=1, keepdims=True)
            picked = logits[rows, labels]
            np.exp(logits, out=logits)
            norm = logits.sum(axis=1)
            loss += float(weight64[start:stop] @ (np.log(norm) - picked))
            logits *= (wc / norm)[:, None]
            logits[rows, labels] -= wc
            grad_bias += logits.sum(axis=0, dtype=np.float64)
            # (x.T @ r).T and r.T @ x are the same (k, D) product; OpenBLAS runs the first 2.5-5x
            # faster when k < D (50k x 512, k=100: 143 vs 523 ms) and the second when k > D
            grad_weights += (x.T @ logits).T if x_first else logits.T @ x
        grad_weights += l2 * weights - np.outer(grad_bias, precond.mean)
        grad = np.empty((k, precond.dim + 1))
        grad[:, :-1] = precond.apply(grad_weights)
        grad[:, -1] = grad_bias
        return loss + 0.5 * l2 * float(np.vdot(weights, weights)), grad.ravel()

    return loss_grad


def _device_loss_grad(device_rows, rows, y, w, k, l2, precond, monitor, chunk):
    """:func:`_loss_grad` in torch on the device of ``device_rows`` (``accel.DeviceRows``): the
    same float32 products and float64 sums, one row chunk at a time; parameters go up and the
    (k, D + 1) gradient comes back once per evaluation."""
    import torch

    device = device_rows.device
    labels_t = accel.to_device(y, device, np.int64)
    weights_t = accel.to_device(w, device, np.float32)
    index_t = None if rows is None else accel.to_device(rows, device, np.int64)

    def loss_grad(theta):
        monitor.check_cancel()
        weights, bias = _original_params(theta, k, precond)
        coef = accel.to_device(weights.T, device, np.float32)
        intercept = accel.to_device(bias, device, np.float32)
        loss = torch.zeros((), dtype=torch.float64, device=device)
        grad_coef = torch.zeros((precond.dim, k), dtype=torch.float64, device=device)
        grad_bias = torch.zeros(k, dtype=torch.float64, device=device)
        for start in range(0, y.size, chunk):
            stop = min(start + chunk, y.size)
            x = (device_rows.block(start, stop) if index_t is None
                 else device_rows.take(index_t[start:stop]))
            chunk_labels, chunk_weights = labels_t[start:stop, None], weights_t[start:stop]
            logits = torch.addmm(intercept, x, coef)
            norm = torch.logsumexp(logits, dim=1)
            picked = logits.gather(1, chunk_labels).squeeze(1)
            loss += torch.dot(chunk_weights.double(), (norm - picked).double())
            residual = logits.sub_(norm[:, None]).exp_().mul_(chunk_weights[:, None])
            residual.scatter_add_(1, chunk_labels, -chunk_weights[:, None])
            grad_bias += residual.sum(dim=0, dtype=torch.float64)
            grad_coef += (x.T @ residual).double()
        grad_weights = grad_coef.T.cpu().numpy()
        grad_bias_host = grad_bias.cpu().numpy()
        grad_weights += l2 * weights - np.outer(grad_bias_host, precond.mean)
        grad = np.empty((k, precond.dim + 1))
        grad[:, :-1] = precond.apply(grad_weights)
        grad[:, -1] = grad_bias_host
        return float(loss) + 0.5 * l2 * float(np.vdot(weights, weights)), grad.ravel()

    return loss_grad
