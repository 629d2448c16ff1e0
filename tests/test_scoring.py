"""Scores: ranges, direction, the zero-shot definition, fit modes and persistence."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clipcleaner_core.errors import DataError
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.scoring import (
    ScoringConfig,
    consistency_score,
    fit_scores,
    load_fit,
    loss_score,
    save_fit,
    zero_shot_log_probabilities,
)


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@st.composite
def features_problem(draw):
    n = draw(st.integers(1, 30))
    k = draw(st.integers(2, 5))
    dim = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    feats = _unit(rng.standard_normal((n, dim)))
    text_labels = np.concatenate([np.arange(k), rng.integers(0, k, draw(st.integers(0, 6)))])
    text = _unit(rng.standard_normal((text_labels.size, dim)))
    labels = rng.integers(0, k, n)
    tau = draw(st.sampled_from([0.001, 0.01, 0.07, 1.0, 10.0]))
    return feats, text, text_labels, labels, k, tau


@settings(max_examples=60, deadline=None)
@given(features_problem())
def test_scores_stay_in_range_without_nan_even_at_tiny_temperature(problem):
    feats, text, text_labels, labels, k, tau = problem
    log_p = zero_shot_log_probabilities(feats, text, text_labels, num_classes=k, temperature=tau)
    assert np.isfinite(log_p).all()
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=1e-9)
    loss = loss_score(log_p, labels, num_classes=k)
    cons = consistency_score(log_p, labels)
    assert np.isfinite(loss).all() and np.isfinite(cons).all()
    assert ((loss >= 0) & (loss <= 1)).all()
    assert ((cons > 0) & (cons <= 1)).all()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (12, 3), elements=st.floats(-50, 0)), st.integers(0, 2**16))
def test_loss_score_direction_within_class(log_p, seed):
    labels = np.random.default_rng(seed).integers(0, 3, 12)
    loss = loss_score(log_p, labels, num_classes=3)
    own = log_p[np.arange(12), labels]
    for cls in range(3):
        idx = np.flatnonzero(labels == cls)
        if idx.size < 2 or np.ptp(own[idx]) == 0:
            continue
        order = np.argsort(own[idx])
        assert np.all(np.diff(loss[idx][order]) >= -1e-12)  # higher log p -> higher score
        assert loss[idx].min() == 0.0 and loss[idx].max() == 1.0


def test_all_equal_class_scores_one_and_single_sample_class_too():
    log_p = np.log(np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]]))
    loss = loss_score(log_p, np.array([0, 0, 1]), num_classes=2)
    np.testing.assert_array_equal(loss, [1.0, 1.0, 1.0])


def test_consistency_is_ratio_to_the_top_class():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    cons = consistency_score(np.log(p), np.array([1, 2]))
    np.testing.assert_allclose(cons, [0.5, 1.0])


def test_zero_shot_equals_sum_of_exp_definition():
    rng = np.random.default_rng(0)
    feats = _unit(rng.standard_normal((7, 5)))
    text = _unit(rng.standard_normal((6, 5)))
    text_labels = np.array([2, 0, 1, 0, 2, 2])
    tau = 0.5
    got = np.exp(zero_shot_log_probabilities(feats, text, text_labels, num_classes=3,
                                             temperature=tau))
    sims = np.exp(feats @ text.T / tau)
    per_class = np.stack([sims[:, text_labels == k].sum(axis=1) for k in range(3)], axis=1)
    np.testing.assert_allclose(got, per_class / per_class.sum(axis=1, keepdims=True), rtol=1e-5)


def test_zero_shot_refuses_a_class_without_prompts():
    feats = _unit(np.ones((2, 3)))
    with pytest.raises(DataError, match="without prompts"):
        zero_shot_log_probabilities(feats, feats, np.array([0, 0]), num_classes=2)


def test_unknown_probe_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="in-sample, cross-val, off"):
        ScoringConfig(probe="insample")


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(400, 4, 16, noise_rate=0.4, spread=1.5, seed=1)


def _fit(problem, **config):
    return fit_scores(problem["features"], problem["labels"], num_classes=4,
                      text_features=problem["text_features"], text_labels=problem["text_labels"],
                      config=ScoringConfig(**config))


@pytest.mark.parametrize("config, zs, lr", [
    ({}, True, True),
    ({"zeroshot": False}, False, True),
    ({"probe": "off"}, True, False),
    ({"probe": "cross-val", "n_folds": 3}, True, True),
])
def test_fit_modes_provide_the_requested_scores(problem, config, zs, lr):
    fit = _fit(problem, **config)
    assert fit.has_zeroshot == zs and fit.has_probe == lr
    for prefix, on in (("zs", zs), ("lr", lr)):
        for name in ("loss_score", "consistency", "clean_prob"):
            values = getattr(fit, f"{prefix}_{name}")
            assert (values is not None) == on
            if on:
                assert values.shape == (400,) and np.all((values >= 0) & (values <= 1))
    if lr:  # wrong labels get a lower probe loss score than right ones
        wrong = problem["labels"] != problem["true_labels"]
        assert fit.lr_loss_score[wrong].mean() < fit.lr_loss_score[~wrong].mean()


def test_fit_needs_text_features_for_zero_shot(problem):
    with pytest.raises(DataError, match="zeroshot=False"):
        fit_scores(problem["features"], problem["labels"], num_classes=4)


def test_progress_reports_each_stage(problem):
    stages = []
    fit_scores(problem["features"], problem["labels"], num_classes=4,
               text_features=problem["text_features"], text_labels=problem["text_labels"],
               progress=lambda stage, done, total, rate: stages.append(stage))
    assert {"probe", "scores", "mixtures"} <= set(stages)


def test_save_and_load_round_trip(problem, tmp_path):
    fit = _fit(problem, probe="off", temperature=0.05)
    path = save_fit(fit, tmp_path / "fit.npz")
    again = load_fit(path)
    assert again.config == fit.config and again.num_classes == 4
    assert not again.has_probe and again.lr_top_classes is None
    np.testing.assert_array_equal(again.zs_top_classes, fit.zs_top_classes)
    np.testing.assert_array_equal(again.zs_clean_prob, fit.zs_clean_prob)
    np.testing.assert_array_equal(again.labels, fit.labels)
    np.testing.assert_array_equal(again.zs_mixtures.means, fit.zs_mixtures.means)
    assert again.lr_mixtures is None


def test_stored_mixtures_give_the_clean_probabilities(problem):
    from clipcleaner_core.gmm import clean_probability, mixture_posterior

    fit = _fit(problem)
    for prefix in ("zs", "lr"):
        loss, mixtures = getattr(fit, f"{prefix}_loss_score"), getattr(fit, f"{prefix}_mixtures")
        np.testing.assert_allclose(mixture_posterior(loss, fit.labels, mixtures), getattr(fit, f"{prefix}_clean_prob"))
        np.testing.assert_allclose(clean_probability(loss, fit.labels, num_classes=4),
                                   getattr(fit, f"{prefix}_clean_prob"))


def test_a_fit_from_an_older_format_is_refused_so_it_is_recomputed(problem, tmp_path):
    import json

    path = save_fit(_fit(problem), tmp_path / "fit.npz")
    sidecar = tmp_path / "fit.npz.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(DataError, match="version"):
        load_fit(path)


@pytest.mark.parametrize("probe_mode", ["in-sample", "cross-val"])
def test_chunked_fit_equals_the_dense_computation(problem, probe_mode):
    """Tiny row chunks give exactly what the (N, K) matrices give."""
    from clipcleaner_core.probe import probe_log_probabilities

    config = ScoringConfig(probe=probe_mode, n_folds=3)
    fit = fit_scores(problem["features"], problem["labels"], num_classes=4,
                     text_features=problem["text_features"], text_labels=problem["text_labels"],
                     config=config, chunk_rows=7)
    labels = problem["labels"]
    dense = {
        "zs": zero_shot_log_probabilities(problem["features"], problem["text_features"],
                                          problem["text_labels"], num_classes=4),
        "lr": probe_log_probabilities(problem["features"], labels, num_classes=4, mode=probe_mode,
                                      n_folds=3),
    }
    for prefix, log_p in dense.items():
        np.testing.assert_allclose(getattr(fit, f"{prefix}_loss_score"),
                                   loss_score(log_p, labels, num_classes=4), atol=1e-6)
        np.testing.assert_allclose(getattr(fit, f"{prefix}_consistency"),
                                   consistency_score(log_p, labels), rtol=1e-5)
        top = getattr(fit, f"{prefix}_top_classes")
        np.testing.assert_array_equal(top[:, 0], np.argmax(log_p, axis=1))
        np.testing.assert_allclose(getattr(fit, f"{prefix}_top_probs"),
                                   np.take_along_axis(np.exp(log_p), top, axis=1), rtol=1e-6)
    both = np.argmax(np.exp(dense["zs"]) + np.exp(dense["lr"]), axis=1)
    np.testing.assert_array_equal(fit.suggested_label(zeroshot=True, probe=True), both)


def test_fit_keeps_no_per_class_matrix(problem):
    fit = _fit(problem)
    for name, value in vars(fit).items():
        if isinstance(value, np.ndarray) and value.ndim == 2:  # a top-5, or the kNN graph's k
            assert value.shape[1] <= (fit.config.neighbours if name.startswith("knn_") else 5), name


@pytest.mark.parametrize("labels, match", [
    (np.full(400, 0.5), "not a whole number"),
    (np.array(["cat"] * 400), "not a class id"),
])
def test_labels_that_are_not_class_indices_are_refused(problem, labels, match):
    with pytest.raises(DataError, match=match):
        fit_scores(problem["features"], labels, num_classes=4, config=ScoringConfig(zeroshot=False))


def test_nan_in_text_features_is_refused(problem):
    text = problem["text_features"].copy()
    text[2, 0] = np.nan
    with pytest.raises(DataError, match="text_features row 2"):
        fit_scores(problem["features"], problem["labels"], num_classes=4, text_features=text,
                   text_labels=problem["text_labels"])


def test_float16_features_keep_the_clean_set(problem):
    from clipcleaner_core.selection import select

    full = select(_fit(problem)).clean_mask
    half = select(fit_scores(problem["features"].astype(np.float16), problem["labels"], num_classes=4,
                             text_features=problem["text_features"],
                             text_labels=problem["text_labels"])).clean_mask
    jaccard = (full & half).sum() / (full | half).sum()
    assert jaccard >= 0.99


def test_neighbour_evidence_by_default_only_where_the_exact_graph_is_cheap():
    from clipcleaner_core.knn_index import EXACT_MAX_ROWS

    assert ScoringConfig().resolved(EXACT_MAX_ROWS).neighbours > 0
    assert ScoringConfig().resolved(EXACT_MAX_ROWS + 1).neighbours == 0  # no index unless asked
    assert ScoringConfig(neighbours=15).resolved(10 * EXACT_MAX_ROWS).neighbours == 15
    assert ScoringConfig(neighbours=0).resolved(10).neighbours == 0
