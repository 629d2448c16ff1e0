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
    x, y = problem["features"], problem["labels"]
    fitted = fit_probe(x, y, num_classes=8)
    ours = np.exp(fitted.predict_log_proba(x))
    ref = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000).fit(x, y)
    theirs = ref.predict_proba(x)
    assert np.abs(ours - theirs).max() < 2e-3
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.995
    clean_ours, clean_theirs = _clean_mask(ours, y, 8), _clean_mask(theirs, y, 8)
    assert 0.2 < clean_theirs.mean() < 0.8  # a real decision, not all-clean or all-flagged
    assert (clean_ours == clean_theirs).mean() >= 0.999
    assert 0 < fitted.n_iter_ <= fitted.n_evals_


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
