"""The fast probe fits scikit-learn's objective and predicts like it."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clipcleaner_core.gmm import clean_probability
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core import probe as probe_module
from clipcleaner_core.errors import Cancelled
from clipcleaner_core.probe import fit_probe, fit_probe_predictor, probe_log_probabilities
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


@pytest.mark.parametrize("rank", [64, 3])
def test_preconditioning_is_an_exact_reparametrisation_on_rank_deficient_features(rank, monkeypatch):
    """Constant and duplicated feature columns (pixels often have them) still fit the same optimum,
    with the exact eigendecomposition and with a randomized top-3 one."""
    monkeypatch.setattr(probe_module, "_preconditioner_rank", lambda k: rank)
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
    monkeypatch.setattr(probe_module, "SINGLE_THREAD_WORK", 0)  # a fit big enough for threads
    with pytest.raises(RuntimeError, match="boom"):
        fit_probe(problem["features"], problem["labels"], num_classes=8)
    assert seen == [before]
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before

    # a small fit evaluates on one thread, and still restores the counts
    monkeypatch.setattr(probe_module, "SINGLE_THREAD_WORK", 10**12)
    seen.clear()
    with pytest.raises(RuntimeError, match="boom"):
        fit_probe(problem["features"], problem["labels"], num_classes=8)
    assert seen == [[1] * len(before)]
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


def _power_law_problem(n=1500, k=6, dim=40, seed=0):
    """CLIP-like and rank-deficient: a power-law covariance spectrum (condition ~1e4), one shared
    mean direction, L2-normalised, then duplicated and constant columns appended."""
    rng = np.random.default_rng(seed)
    spectrum = np.arange(1, dim + 1) ** -2.5
    mixing = np.sqrt(spectrum)[:, None] * np.linalg.qr(rng.standard_normal((dim, dim)))[0].T
    true = rng.integers(0, k, n)
    rows = (rng.standard_normal((n, dim)) + 1.5 * rng.standard_normal((k, dim))[true]) @ mixing
    rows += 2.0 * np.sqrt(spectrum.sum()) * rng.standard_normal(dim) / np.sqrt(dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    x = np.hstack([rows, rows[:, :4], np.full((n, 4), 0.25)]).astype(np.float32)
    labels = true.copy()
    flip = rng.random(n) < 0.4
    labels[flip] = rng.integers(0, k, int(flip.sum()))
    return x, labels, k


def _raw_digits(n=600):
    """scikit-learn's raw 8x8 digits: unnormalised 0..16 pixels, several constant columns."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    labels = digits.target[:n].copy()
    flip = rng.random(n) < 0.4
    labels[flip] = rng.integers(0, 10, int(flip.sum()))
    return digits.data[:n].astype(np.float32), labels, 10


@pytest.mark.parametrize("make", [_power_law_problem, _raw_digits])
def test_badly_conditioned_features_converge_in_few_iterations(make):
    """Near-full whitening (the ridge shrunk a million-fold) needs ~1,300-1,500 iterations on these:
    it scales the near-zero directions up, so the L2 term becomes ill-conditioned. The regularised
    preconditioner needs fewer than scikit-learn, and ends at least as close to the optimum."""
    x, y, k = make()
    sk = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000).fit(x, y)
    ours = fit_probe(x, y, num_classes=k)
    assert ours.n_iter_ <= int(np.max(sk.n_iter_))
    exact = LogisticRegression(C=1.0, class_weight="balanced", solver="newton-cg", tol=1e-10,
                               max_iter=10_000).fit(x.astype(np.float64), y)
    p_exact = exact.predict_proba(x.astype(np.float64))
    gap_ours = np.abs(np.exp(ours.predict_log_proba(x)) - p_exact).max()
    assert gap_ours <= max(np.abs(sk.predict_proba(x) - p_exact).max(), 2e-3)


def test_chunked_evaluation_equals_one_pass(problem, monkeypatch):
    """Loss and gradient summed over tiny row chunks (float32 slices, float16 conversion, gathered
    fold rows) equal the one-pass evaluation, and the fits agree."""
    x, y = problem["features"], problem["labels"]
    classes, codes = np.unique(y, return_inverse=True)
    w = (len(y) / (classes.size * np.bincount(codes)))[codes]
    w = (w / w.sum()).astype(np.float32)
    theta = np.random.default_rng(0).standard_normal(8 * (x.shape[1] + 1)) * 0.1
    monitor = probe_module._Monitor(None, None, n_fits=1)

    def evaluate(features, rows, chunk, codes=codes, w=w):
        source = probe_module._RowSource(features, rows, chunk)
        precond = probe_module._preconditioner(source, w, 0.01, 64)
        return probe_module._loss_grad(source, codes, w, 8, 1e-3, precond, monitor)(theta)

    half = x.astype(np.float16)
    for features, reference, chunk in [(x, x, 7), (half, half.astype(np.float32), 7),
                                       (np.asfortranarray(x), x, 100)]:
        loss, grad = evaluate(features, None, chunk)
        whole_loss, whole_grad = evaluate(reference, None, len(y))
        np.testing.assert_allclose(loss, whole_loss, rtol=1e-5)
        np.testing.assert_allclose(grad, whole_grad, rtol=1e-4, atol=1e-7)
    rows = np.flatnonzero(np.arange(len(y)) % 3 != 0)
    fold_w = w[rows] / w[rows].sum()
    gathered = evaluate(x, rows, 11, codes[rows], fold_w)
    copied = evaluate(np.ascontiguousarray(x[rows]), None, len(rows), codes[rows], fold_w)
    np.testing.assert_allclose(gathered[0], copied[0], rtol=1e-5)
    np.testing.assert_allclose(gathered[1], copied[1], rtol=1e-4, atol=1e-7)

    one_pass = np.exp(fit_probe(x, y, num_classes=8).predict_log_proba(x))
    monkeypatch.setattr(probe_module, "CHUNK_ROWS", 64)
    for mode in ("in-sample", "cross-val"):
        chunked = np.exp(probe_log_probabilities(x, y, num_classes=8, mode=mode, n_folds=3))
        monkeypatch.setattr(probe_module, "CHUNK_ROWS", 65_536)
        unchunked = np.exp(probe_log_probabilities(x, y, num_classes=8, mode=mode, n_folds=3))
        monkeypatch.setattr(probe_module, "CHUNK_ROWS", 64)
        np.testing.assert_allclose(chunked, unchunked, atol=2e-3)
    np.testing.assert_allclose(np.exp(fit_probe(x, y, num_classes=8).predict_log_proba(x)),
                               one_pass, atol=2e-3)


def test_features_are_read_in_place_and_float16_is_accepted(problem, tmp_path, monkeypatch):
    """float32 arrays and read-only memmaps are never copied whole; float16 converts per chunk."""
    import tracemalloc

    x, y = problem["features"], problem["labels"]
    path = tmp_path / "features.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    predictor = fit_probe_predictor(mapped, y, num_classes=8)
    assert np.shares_memory(predictor.features, mapped)  # a view of the file, not a copy
    np.testing.assert_allclose(predictor.log_proba(0, len(y)),
                               probe_log_probabilities(x, y, num_classes=8), atol=1e-5)
    assert np.shares_memory(fit_probe_predictor(x, y, num_classes=8).features, x)

    half = np.tile(x, (8, 4)).astype(np.float16)  # 12,000 x 128 float16
    labels = np.tile(y, 8)
    monkeypatch.setattr(probe_module, "CHUNK_ROWS", 500)
    monkeypatch.setattr(probe_module, "COVARIANCE_ROWS", 500)
    tracemalloc.start()
    try:
        probe = fit_probe(half, labels, num_classes=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a float32 copy of the features would be 6.1 MB; per-sample vectors and chunks are far less
    assert peak < half.size * 4 / 2
    p_half = np.exp(probe.predict_log_proba(half[: len(y)]))
    wide = np.tile(x, (1, 4))
    p_full = np.exp(fit_probe(np.tile(wide, (8, 1)), labels, num_classes=8).predict_log_proba(wide))
    assert (p_half.argmax(1) == p_full.argmax(1)).mean() > 0.99


def test_progress_counts_iterations_over_all_folds(problem):
    x, y = problem["features"], problem["labels"]
    calls = []
    fit_probe_predictor(x, y, num_classes=8, mode="cross-val", n_folds=3,
                        progress=lambda *args: calls.append(args))
    assert {call[0] for call in calls} == {"probe"}
    done = [call[1] for call in calls]
    totals = {call[2] for call in calls}
    assert len(totals) == 1 and done == sorted(done) and done[0] == 0
    total = totals.pop()
    assert total >= 3 and done[-1] == total and all(0 <= d <= total for d in done)
    assert len(calls) >= 2
    assert all(rate is None or rate > 0 for *_, rate in calls)


def test_cancel_stops_the_fit_between_iterations(problem):
    from threadpoolctl import threadpool_info

    x, y = problem["features"], problem["labels"]
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(Cancelled):
        fit_probe_predictor(x, y, num_classes=8, mode="cross-val", n_folds=3, cancel=cancel)
    assert len(polls) == 4  # stopped at the first poll that said so
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before


def test_bad_features_name_the_row(problem):
    x = problem["features"].copy()
    x[17, 3] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        fit_probe(x, problem["labels"], num_classes=8)


def test_the_stopping_tolerance_shrinks_with_many_classes():
    from clipcleaner_core.probe import PRECONDITIONED_TOL, default_tol

    assert default_tol(2) == default_tol(100) == PRECONDITIONED_TOL
    assert default_tol(1000) == pytest.approx(1e-5)
    # a fit on 300 classes stops later than it would at the 10-class tolerance, closer to the optimum
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((300, 32))
    labels = np.repeat(np.arange(300), 8)
    x = (centres[labels] + 2.0 * rng.standard_normal((labels.size, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    default = fit_probe(x, labels, num_classes=300)
    loose = fit_probe(x, labels, num_classes=300, tol=PRECONDITIONED_TOL)
    assert default.n_iter_ > loose.n_iter_
