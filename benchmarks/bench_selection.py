"""Re-applying thresholds vs refitting the per-class mixtures for every setting.

The official code refits one scikit-learn GaussianMixture per class (for each loss score) each
time the selection is made; CLIPCleaner fits them once (``fit_scores``) and a threshold change
is only ``select``. Prints ms per apply, ms per refit and their ratio, measured in this run.

    python benchmarks/bench_selection.py [--n 50000] [--classes 100]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from clipcleaner_core.gmm import clean_probability, clean_probability_sklearn
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.scoring import ScoringConfig, fit_scores
from clipcleaner_core.selection import SelectionConfig, select


def _refit_and_select(fit, config: SelectionConfig) -> np.ndarray:
    """What the official code does per setting: sklearn mixtures per class, then thresholds."""
    clean = np.ones(len(fit), dtype=bool)
    for prefix in ("zs", "lr"):
        loss = getattr(fit, f"{prefix}_loss_score")
        prob = clean_probability_sklearn(loss, fit.labels, num_classes=fit.num_classes)
        clean &= prob >= config.theta_gmm
        clean &= getattr(fit, f"{prefix}_consistency") >= config.theta_cons
    return clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--refits", type=int, default=2)
    args = parser.parse_args()
    pr = make_synthetic_problem(args.n, args.classes, args.dim, noise_rate=0.4, spread=2.0, seed=0)
    start = time.perf_counter()
    fit = fit_scores(pr["features"], pr["labels"], num_classes=args.classes,
                     text_features=pr["text_features"], text_labels=pr["text_labels"],
                     config=ScoringConfig())
    print(f"one-off fit_scores (N={args.n}, K={args.classes}, D={args.dim}): "
          f"{time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    clean_probability(fit.zs_loss_score, fit.labels, num_classes=args.classes)
    ours_gmm = time.perf_counter() - start
    start = time.perf_counter()
    clean_probability_sklearn(fit.zs_loss_score, fit.labels, num_classes=args.classes)
    sk_gmm = time.perf_counter() - start
    print(f"mixtures for one score, all classes: vectorised {ours_gmm * 1e3:.1f} ms, "
          f"sklearn per class {sk_gmm * 1e3:.0f} ms ({sk_gmm / ours_gmm:.0f}x)")

    settings = [SelectionConfig(theta_gmm=g, theta_cons=c)
                for g in (0.3, 0.5, 0.7, 0.9) for c in (0.5, 0.8, 0.9, 1.0)]
    select(fit, settings[0])  # warm-up
    start = time.perf_counter()
    for config in settings:
        select(fit, config)
    apply_ms = (time.perf_counter() - start) / len(settings) * 1e3
    start = time.perf_counter()
    for config in settings[: args.refits]:
        _refit_and_select(fit, config)
    refit_ms = (time.perf_counter() - start) / args.refits * 1e3
    print(f"apply thresholds (select): {apply_ms:.2f} ms per apply "
          f"(mean of {len(settings)} settings)")
    print(f"refit mixtures + threshold (official way): {refit_ms:.0f} ms per refit "
          f"(mean of {args.refits})")
    print(f"ratio refit / apply: {refit_ms / apply_ms:.0f}x")


if __name__ == "__main__":
    main()
