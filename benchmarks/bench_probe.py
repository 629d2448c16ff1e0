"""Probe fit: our preconditioned float32 L-BFGS vs scikit-learn's LogisticRegression, on real spectra.

Both minimise the same objective (multinomial, L2 with C=1, class_weight="balanced", bias
unpenalised) with SciPy's L-BFGS-B from zero; ours runs in coordinates preconditioned by the
regularised covariance (an exact reparametrisation, see clipcleaner_core/probe.py). The baseline is
exactly ``LogisticRegression(solver="lbfgs", max_iter=10000, class_weight="balanced")`` with its
default tol, as users run it, on the same float32 features.

Cases (``--cases``; each runs in its own child process so its peak RSS is its own):

- ``isotropic``: Gaussian blobs around random unit centres (``make_synthetic_problem``, 50k x 512,
  100 classes), the case where full whitening was already strong.
- ``pixels``: the app's demo as a new user sees it: scikit-learn's 1,797 digits through the
  weight-free ``pixels`` encoder (16x16 RGB, centred, L2-normalised: 768-d, rank ~231).
- ``digits``: scikit-learn's raw 8x8 digits (64-d, unnormalised, several constant columns).
- ``clip-10k``, ``clip-50k``, ``clip-200k``: CLIP-like synthetics (512-d, power-law covariance
  spectrum with condition number ~5,000, one shared "cone" mean direction, L2-normalised) at
  10k x 10, 50k x 100 and 200k x 1,000 classes; the last only with ``--large`` (sklearn takes
  long there).

All label sets carry 40 % symmetric noise. Per case it prints both fit times (best of ``--repeat``
alternating runs in the same process, so a busy shared machine slows both alike), iterations and
loss/gradient evaluations of each (sklearn's counted by a thin wrapper around its loss), the
speed-up, the fraction of samples whose clean/flagged decision (probe loss-score mixture at
theta_gmm 0.5 and probe consistency at theta_cons 0.8) agrees, the largest probability
difference, the objective of our fit minus sklearn's (negative = ours is closer to the common
optimum), and the peak RSS after building the data, after our first fit and after sklearn's. On
the small cases (pixels, digits) it also fits the exact optimum (newton-cg, float64, tol 1e-10)
and prints how many decisions of each fit agree with it: sklearn's default stopping point itself
differs from the optimum on a few of 1,797 samples there.

    python benchmarks/bench_probe.py [--cases pixels digits ...] [--large] [--repeat 2]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np

EXACT_REFERENCE_SIZE = 20_000_000  # N x D x K up to which the exact optimum is computed too
DEFAULT_CASES = ("isotropic", "pixels", "digits", "clip-10k", "clip-50k")
LARGE_CASES = ("clip-200k",)


def _clean_mask(log_p: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    from clipcleaner_core.gmm import clean_probability
    from clipcleaner_core.scoring import consistency_score, loss_score

    loss = loss_score(log_p, labels, num_classes=k)
    prob = clean_probability(loss, labels, num_classes=k)
    return (prob >= 0.5) & (consistency_score(log_p, labels) >= 0.8)


def _symmetric_noise(labels: np.ndarray, k: int, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flip = rng.random(labels.size) < rate
    noisy[flip] = rng.integers(0, k, int(flip.sum()))
    return noisy


def isotropic_case():
    from clipcleaner_core.metrics import make_synthetic_problem

    problem = make_synthetic_problem(50_000, 100, 512, noise_rate=0.4, spread=2.0, seed=0)
    return problem["features"], problem["labels"], 100


def pixels_case():
    """The demo's features exactly as the app computes them (the ``pixels`` encoder)."""
    import torch
    from PIL import Image

    from clipcleaner_core.data.demo import load_demo
    from clipcleaner_core.encoders import EncoderSpec, load_encoder

    dataset = load_demo(noise_rate=0.4, seed=0)
    encoder = load_encoder(EncoderSpec("pixels"))
    batch = torch.stack([encoder.preprocess(Image.fromarray(image)) for image in dataset.images])
    features = encoder.encode_images(batch).numpy().astype(np.float32)
    return features, np.asarray(dataset.labels, dtype=np.int64), 10


def digits_case():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data.astype(np.float32), _symmetric_noise(digits.target, 10, 0.4, seed=0), 10)


def clip_like(n: int, k: int, *, dim: int = 512, condition: float = 5_000.0, seed: int = 0):
    """CLIP-like features: class centres and within-class noise share a power-law covariance
    (eigenvalues j^-alpha in a random basis, ``condition`` = largest / smallest), all offset by one
    shared "cone" direction, then L2-normalised; labels with 40 % symmetric noise."""
    rng = np.random.default_rng(seed)
    alpha = np.log(condition) / np.log(dim)
    spectrum = np.arange(1, dim + 1) ** -alpha
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    mixing = (np.sqrt(spectrum)[:, None] * basis.T).astype(np.float32)  # rows sqrt(l_j) v_j
    cone = rng.standard_normal(dim)
    cone *= 1.8 * np.sqrt(spectrum.sum()) / np.linalg.norm(cone)
    centres = rng.standard_normal((k, dim)).astype(np.float32) @ mixing
    true = rng.integers(0, k, n)
    features = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        rows = rng.standard_normal((stop - start, dim)).astype(np.float32) @ mixing
        rows += centres[true[start:stop]] + cone.astype(np.float32)
        features[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return features, _symmetric_noise(true, k, 0.4, seed=seed + 1), k


CASES = {
    "isotropic": isotropic_case,
    "pixels": pixels_case,
    "digits": digits_case,
    "clip-10k": lambda: clip_like(10_000, 10),
    "clip-50k": lambda: clip_like(50_000, 100),
    "clip-200k": lambda: clip_like(200_000, 1_000),
}


def _sklearn(features, labels, tol=1e-4):
    from sklearn.linear_model import LogisticRegression
    from sklearn.linear_model._linear_loss import LinearModelLoss

    calls = [0]
    loss_gradient = LinearModelLoss.loss_gradient

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return loss_gradient(self, *args, **kwargs)

    LinearModelLoss.loss_gradient = counted
    try:
        start = time.perf_counter()
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, tol=tol)
        model.fit(features, labels)
        elapsed = time.perf_counter() - start
    finally:
        LinearModelLoss.loss_gradient = loss_gradient
    return elapsed, model, int(np.max(model.n_iter_)), calls[0]


def _objective(coef, intercept, features, labels, k) -> float:
    """sklearn's objective (balanced weighted cross-entropy + L2 at C=1) in float64, in row chunks."""
    counts = np.bincount(labels, minlength=k)
    present = np.flatnonzero(counts)
    weights = (labels.size / (present.size * counts[labels]))
    total, coef64 = 0.0, np.asarray(coef, np.float64)[present]
    for start in range(0, labels.size, 20_000):
        logits = features[start:start + 20_000].astype(np.float64) @ coef64.T
        logits += np.asarray(intercept, np.float64)[present]
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1))
        rows = np.arange(logits.shape[0])
        own = np.searchsorted(present, labels[start:start + 20_000])
        total += float(weights[start:start + 20_000] @ (log_norm - logits[rows, own]))
    return (total + 0.5 * float((coef64 ** 2).sum())) / weights.sum()


def _exact_log_p(features, labels) -> np.ndarray:
    """Log-probabilities at the exact optimum: sklearn's newton-cg in float64 at tol 1e-10."""
    from sklearn.linear_model import LogisticRegression

    x = features.astype(np.float64)
    model = LogisticRegression(C=1.0, class_weight="balanced", solver="newton-cg", tol=1e-10,
                               max_iter=10_000).fit(x, labels)
    return np.log(np.maximum(model.predict_proba(x), np.finfo(np.float64).tiny))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(name: str, repeat: int, sklearn_tol: float = 1e-4) -> None:
    from clipcleaner_core.probe import fit_probe

    features, labels, k = CASES[name]()
    rss_data = _peak_rss_mb()
    ours_times, theirs_times = [], []
    rss_ours = rss_sklearn = None
    for _ in range(repeat):
        start = time.perf_counter()
        probe = fit_probe(features, labels, num_classes=k)
        ours_times.append(time.perf_counter() - start)
        rss_ours = rss_ours or _peak_rss_mb()
        elapsed, model, n_iter, n_evals = _sklearn(features, labels, sklearn_tol)
        theirs_times.append(elapsed)
        rss_sklearn = rss_sklearn or _peak_rss_mb()
    ours, theirs = min(ours_times), min(theirs_times)
    ours_log_p = probe.predict_log_proba(features)
    theirs_p = model.predict_proba(features)
    theirs_log_p = np.log(np.maximum(theirs_p, np.finfo(np.float64).tiny))
    agree = (_clean_mask(ours_log_p, labels, k) == _clean_mask(theirs_log_p, labels, k)).mean()
    p_diff = np.abs(np.exp(ours_log_p) - theirs_p).max()
    gap = (_objective(probe.coef_, probe.intercept_, features, labels, k)
           - _objective(model.coef_, model.intercept_, features, labels, k))
    print(f"== {name}: {features.shape[0]:,} x {features.shape[1]}, {k} classes")
    print(f"   ours    {ours:7.2f} s  {probe.n_iter_:5d} iterations {probe.n_evals_:5d} evaluations")
    print(f"   sklearn {theirs:7.2f} s  {n_iter:5d} iterations {n_evals:5d} evaluations"
          + (f" (tol {sklearn_tol:g})" if sklearn_tol != 1e-4 else ""))
    if n_iter == 0:
        print("   NOTE: sklearn stopped at its starting point (the gradient at zero is already below "
              "its tol): no fit to compare with; rerun with --sklearn-tol 1e-6")
    print(f"   speed-up {theirs / ours:.2f}x; decisions agreeing {agree:.4%}; max |p diff| "
          f"{p_diff:.2e}; peak RSS: data {rss_data:,.0f} MB, after ours {rss_ours:,.0f} MB, "
          f"after sklearn {rss_sklearn:,.0f} MB")
    print(f"   objective ours - sklearn: {gap:+.2e} (negative: ours is closer to the optimum)",
          flush=True)
    if features.size * k <= EXACT_REFERENCE_SIZE:
        exact = _exact_log_p(features, labels)
        clean_exact = _clean_mask(exact, labels, k)
        print(f"   decisions agreeing with the exact optimum: ours "
              f"{(_clean_mask(ours_log_p, labels, k) == clean_exact).mean():.4%}, sklearn "
              f"{(_clean_mask(theirs_log_p, labels, k) == clean_exact).mean():.4%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None,
                        help=f"default: {' '.join(DEFAULT_CASES)} (+ {' '.join(LARGE_CASES)} "
                             "with --large)")
    parser.add_argument("--large", action="store_true", help="also run the 200k x 1,000 case")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs; best time kept")
    parser.add_argument("--sklearn-tol", type=float, default=1e-4,
                        help="the baseline's tol (default: sklearn's own, 1e-4)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_case(args.child, args.repeat, args.sklearn_tol)
        return
    cases = args.cases or (DEFAULT_CASES + (LARGE_CASES if args.large else ()))
    for name in cases:
        subprocess.run([sys.executable, __file__, "--child", name, "--repeat", str(args.repeat),
                        "--sklearn-tol", str(args.sklearn_tol)], check=True)


if __name__ == "__main__":
    main()
