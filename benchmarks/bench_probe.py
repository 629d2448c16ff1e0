"""Probe fit: our fused float32 L-BFGS vs scikit-learn's LogisticRegression on the same inputs.

Both minimise the same objective (multinomial, L2 with C=1, class_weight="balanced", bias
unpenalised) with L-BFGS to the same ``gtol``. Prints both fit times, their ratio, the fraction
of samples whose clean/flagged decision (probe loss-score mixture at theta_gmm 0.5 and probe
consistency at theta_cons 0.8) agrees, and the largest probability difference.

    python benchmarks/bench_probe.py [--n 50000] [--dim 512] [--classes 100] [--float64]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from clipcleaner_core.gmm import clean_probability
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.probe import fit_probe
from clipcleaner_core.scoring import consistency_score, loss_score


def _clean_mask(log_p: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    loss = loss_score(log_p, labels, num_classes=k)
    prob = clean_probability(loss, labels, num_classes=k)
    return (prob >= 0.5) & (consistency_score(log_p, labels) >= 0.8)


def _sklearn(features, labels):
    start = time.perf_counter()
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000).fit(features, labels)
    elapsed = time.perf_counter() - start
    log_p = np.log(np.maximum(model.predict_proba(features), np.finfo(np.float64).tiny))
    return elapsed, log_p, int(np.max(model.n_iter_))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--float64", action="store_true",
                        help="also time sklearn on a float64 copy of the features")
    args = parser.parse_args()
    k = args.classes
    pr = make_synthetic_problem(args.n, k, args.dim, noise_rate=0.4, spread=2.0, seed=0)
    features, labels = pr["features"], pr["labels"]

    start = time.perf_counter()
    probe = fit_probe(features, labels, num_classes=k)
    ours = time.perf_counter() - start
    ours_log_p = probe.predict_log_proba(features)
    print(f"ours  (fused float32 L-BFGS): {ours:.2f} s, {probe.n_iter_} iterations")

    theirs, theirs_log_p, n_iter = _sklearn(features, labels)
    print(f"sklearn lbfgs, float32 input: {theirs:.2f} s, {n_iter} iterations")
    agree = (_clean_mask(ours_log_p, labels, k) == _clean_mask(theirs_log_p, labels, k)).mean()
    p_diff = np.abs(np.exp(ours_log_p) - np.exp(theirs_log_p)).max()
    print(f"speed-up vs same-dtype sklearn: {theirs / ours:.2f}x")
    print(f"clean/flagged decisions agreeing: {agree:.4%}; max |p diff|: {p_diff:.2e}")
    if args.float64:
        theirs64, _, n_iter64 = _sklearn(features.astype(np.float64), labels)
        print(f"sklearn lbfgs, float64 input: {theirs64:.2f} s, {n_iter64} iterations "
              f"({theirs64 / ours:.2f}x ours)")


if __name__ == "__main__":
    main()
