"""The fast probe fits scikit-learn's objective and predicts like it."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clipcleaner_core.gmm import clean_probability
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.probe import fit_probe, probe_log_probabilities
from clipcleaner_core.scoring import consistency_score, loss_score


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(1500, 8, 32, noise_rate=0.4, spread=1.5, seed=3)


def _clean_mask(p, labels, k):
    """The probe's clean/flagged decision downstream: loss-score mixture and consistency."""
    log_p = np.log(np.maximum(p, np.finfo(np.float64).tiny))
    loss = loss_score(log_p, labels, num_classes=k)
    return (clean_probability(loss, labels, num_classes=k) >= 0.5) & (
        consistency_score(log_p, labels) >= 0.8
    )


def test_probe_matches_sklearn_logistic_regression(problem):
    """Same objective as sklearn: probabilities at its (tightly converged) optimum, same decisions."""
    x, y = problem["features"], problem["labels"]
    fitted = fit_probe(x, y, num_classes=8)
    ours = np.exp(fitted.predict_log_proba(x))
    exact = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, tol=1e-8).fit(x, y)
    default = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000).fit(x, y)
    p_exact, p_default = exact.predict_proba(x), default.predict_proba(x)
    # at least as close to the optimum as sklearn's own default stopping point
    assert np.abs(ours - p_exact).max() <= max(np.abs(p_default - p_exact).max(), 2e-3)
    assert (ours.argmax(1) == p_default.argmax(1)).mean() >= 0.995
    clean_ours, clean_default = _clean_mask(ours, y, 8), _clean_mask(p_default, y, 8)
    assert 0.2 < clean_default.mean() < 0.8  # a real decision, not all-clean or all-flagged
    assert (clean_ours == clean_default).mean() >= 0.999
    assert 0 < fitted.n_iter_ <= fitted.n_evals_


def test_whitening_is_an_exact_reparametrisation_on_rank_deficient_features():
    """Constant and duplicated feature columns (pixels often have them) still fit the same optimum."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((400, 6)).astype(np.float32)
    x = np.hstack([base, base[:, :2], np.ones((400, 2), np.float32)])
    y = (base[:, 0] + 0.5 * rng.standard_normal(400) > 0).astype(int) + 2 * (base[:, 1] > 0)
    ours = np.exp(fit_probe(x, y, num_classes=4, tol=1e-7).predict_log_proba(x))
    exact = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, tol=1e-10).fit(x, y)
    assert np.abs(ours - exact.predict_proba(x)).max() < 1e-3


def test_class_absent_from_training_gets_zero_probability(problem):
    x, y = problem["features"], problem["labels"]
    keep = y != 5
    probe = fit_probe(x[keep], y[keep], num_classes=8)
    p = np.exp(probe.predict_log_proba(x))
    assert np.all(p[:, 5] == 0)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)


def test_cross_val_predicts_out_of_sample(problem):
    x, y = problem["features"], problem["labels"]
    inside = probe_log_probabilities(x, y, num_classes=8, mode="in-sample")
    outside = probe_log_probabilities(x, y, num_classes=8, mode="cross-val", n_folds=3, seed=0)
    own = np.arange(y.size), y
    # a probe that never saw a sample is less sure of its (often wrong) given label
    assert outside[own].mean() < inside[own].mean()
    again = probe_log_probabilities(x, y, num_classes=8, mode="cross-val", n_folds=3, seed=0)
    np.testing.assert_array_equal(outside, again)


def test_cross_val_copes_with_tiny_classes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((23, 6)).astype(np.float32)
    y = np.array([0] * 10 + [1] * 10 + [2, 2] + [3])
    log_p = probe_log_probabilities(x, y, num_classes=5, mode="cross-val", n_folds=5)
    assert np.isfinite(log_p[np.arange(23), y]).all()
    np.testing.assert_allclose(np.exp(log_p).sum(1), 1.0, rtol=1e-6)


def test_off_and_unknown_modes():
    x = np.eye(3, dtype=np.float32)
    assert probe_log_probabilities(x, np.arange(3), num_classes=3, mode="off") is None
    with pytest.raises(ValueError, match="valid modes"):
        probe_log_probabilities(x, np.arange(3), num_classes=3, mode="kfold")


def test_fit_restores_blas_thread_counts_even_when_an_evaluation_fails(problem, monkeypatch):
    from threadpoolctl import threadpool_info

    from clipcleaner_core import probe as probe_module

    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    fit_probe(problem["features"], problem["labels"], num_classes=8)
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before

    seen = []

    def failing(*args):
        def loss_grad(theta):
            # inside an evaluation the counts are the caller's, not the optimizer's single thread
            seen.append([lib["num_threads"] for lib in threadpool_info()
                         if lib["user_api"] == "blas"])
            raise RuntimeError("boom")
        return loss_grad

    monkeypatch.setattr(probe_module, "_loss_grad", failing)
    with pytest.raises(RuntimeError, match="boom"):
        fit_probe(problem["features"], problem["labels"], num_classes=8)
    assert seen == [before]
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def test_concurrent_fits_leave_the_blas_thread_counts_as_they_found_them(problem):
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    with ThreadPoolExecutor(3) as pool:
        fits = list(pool.map(lambda _: fit_probe(problem["features"], problem["labels"], num_classes=8),
                             range(6)))
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
    for fitted in fits[1:]:
        np.testing.assert_allclose(np.exp(fitted.predict_log_proba(problem["features"])),
                                   np.exp(fits[0].predict_log_proba(problem["features"])), atol=1e-3)


@pytest.mark.parametrize("mode", ["in-sample", "cross-val"])
def test_predictor_rows_equal_the_whole_matrix(problem, mode):
    """log_proba(start, stop) of the predictor is exactly those rows of probe_log_probabilities."""
    from clipcleaner_core.probe import fit_probe_predictor

    x, y = problem["features"], problem["labels"]
    whole = probe_log_probabilities(x, y, num_classes=8, mode=mode, n_folds=3, seed=1)
    predictor = fit_probe_predictor(x, y, num_classes=8, mode=mode, n_folds=3, seed=1)
    assert predictor.n_rows == len(y)
    parts = [predictor.log_proba(start, min(start + 333, len(y))) for start in range(0, len(y), 333)]
    assert all(part.shape[1] == 8 and part.dtype == np.float64 for part in parts)
    # float32 products may round differently with the block's row count: equal to ~1e-6
    np.testing.assert_allclose(np.vstack(parts), whole, rtol=0, atol=1e-5)
    assert predictor.log_proba(7, 7).shape == (0, 8)
    with pytest.raises(ValueError, match="outside"):
        predictor.log_proba(0, len(y) + 1)
    assert fit_probe_predictor(x, y, num_classes=8, mode="off") is None
