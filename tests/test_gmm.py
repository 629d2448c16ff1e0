"""The vectorised per-class mixtures agree with scikit-learn's GaussianMixture."""
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from clipcleaner_core.gmm import clean_probability, clean_probability_sklearn, fit_mixtures
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.scoring import ScoringConfig, fit_scores


@pytest.fixture(scope="module")
def loss_scores():
    pr = make_synthetic_problem(3000, 15, 32, noise_rate=0.4, spread=2.0, seed=5)
    fit = fit_scores(pr["features"], pr["labels"], num_classes=15,
                     text_features=pr["text_features"], text_labels=pr["text_labels"],
                     config=ScoringConfig(probe="off"))
    return fit.zs_loss_score, pr["labels"]


def test_matches_sklearn_per_class(loss_scores):
    scores, labels = loss_scores
    ours = clean_probability(scores, labels, num_classes=15)
    theirs = clean_probability_sklearn(scores, labels, num_classes=15, seed=0)
    assert ((ours >= 0.5) == (theirs >= 0.5)).mean() >= 0.99
    mixtures = fit_mixtures(scores, labels, num_classes=15)
    for k in range(15):
        values = scores[labels == k][:, None]
        ref = GaussianMixture(n_components=2, random_state=0).fit(values)
        np.testing.assert_allclose(np.sort(mixtures.means[k]), np.sort(ref.means_[:, 0]),
                                   atol=0.03)


def test_tiny_and_constant_classes_are_kept():
    scores = np.array([0.1, 0.9, 0.5, 0.5, 0.5, 0.3])
    labels = np.array([0, 0, 1, 1, 1, 2])
    prob = clean_probability(scores, labels, num_classes=4)
    np.testing.assert_array_equal(prob[2:], 1.0)
    assert prob[1] > 0.5 > prob[0]


def test_clean_component_is_the_larger_mean():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.2, 0.05, 200), rng.normal(0.8, 0.05, 300)])
    prob = clean_probability(scores, np.zeros(500, dtype=int), num_classes=1)
    assert prob[:200].max() < 0.01 and prob[200:].min() > 0.99
