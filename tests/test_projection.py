"""The map: UMAP keeps neighbourhoods, the sampled layout keeps them as well as the full fit, disk
cache, progress and cancel, tiny inputs, the quick layout first and the final one later."""
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from clipcleaner_core import projection
from clipcleaner_core.errors import Cancelled, ConfigError, DataError
from clipcleaner_core.projection import cached_umap, compute_umap, display_sample, quick_layout


def clustered_features(n=300, d=64, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    labels = np.arange(n) % k
    features = centres[labels] + rng.normal(size=(n, d))
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32), labels


def nearest_label_agreement(coords, labels):
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    return (labels[distances.argmin(axis=1)] == labels).mean()


@pytest.fixture(scope="module")
def umap_run(tmp_path_factory):
    """The one real full UMAP fit of this module (the first one in a process pays numba compilation)."""
    features, labels = clustered_features()
    root = tmp_path_factory.mktemp("cache")
    reports = []
    coords = compute_umap(features, cache_key="emb123", cache_root=root, pca_dims=10,
                          progress=lambda *report: reports.append(report))
    return features, labels, root, coords, reports


@pytest.fixture(scope="module")
def sampled_vs_full(tmp_path_factory):
    """Many small clusters: umap-learn on all 1,200 points, and fitted on 400 with the rest placed."""
    features, labels = clustered_features(n=1200, d=32, k=12, seed=1)
    root = tmp_path_factory.mktemp("sampled")
    reports = []
    full = compute_umap(features, cache_key="full", cache_root=root, pca_dims=16)
    sampled = compute_umap(features, cache_key="sampled", cache_root=root, pca_dims=16, fit_size=400,
                           progress=lambda *report: reports.append(report))
    return features, labels, full, sampled, reports


def test_umap_map_has_one_point_per_sample_and_keeps_clusters(umap_run):
    _, labels, _, coords, reports = umap_run
    assert coords.shape == (300, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    assert nearest_label_agreement(coords, labels) > 0.95
    assert [r[0] for r in reports][0] == "pca" and reports[-1][:3] == ("done", 1, 1)
    epochs = [r for r in reports if r[0] == "umap"]
    assert epochs and epochs[-1][1] == epochs[-1][2] == 500  # every epoch reported, to the last


def test_sampled_layout_places_points_among_their_neighbours(sampled_vs_full):
    features, labels, full, sampled, _ = sampled_vs_full
    assert sampled.shape == (1200, 2) and sampled.dtype == np.float32 and np.isfinite(sampled).all()
    trust_full = trustworthiness(features, full, n_neighbors=10)
    trust_sampled = trustworthiness(features, sampled, n_neighbors=10)
    assert trust_sampled > 0.9 and trust_sampled >= trust_full - 0.03
    assert nearest_label_agreement(sampled, labels) > 0.95
    fit_rows = projection._sample_rows(1200, 400, 0)
    placed = np.setdiff1d(np.arange(1200), fit_rows)
    assert nearest_label_agreement(sampled[placed], labels[placed]) > 0.95


def test_progress_runs_through_the_stages_in_order_and_never_goes_back(sampled_vs_full):
    *_, reports = sampled_vs_full
    stages = [r[0] for r in reports]
    order = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert order == ["pca", "umap", "place", "done"]
    for stage in ("pca", "umap", "place"):
        done = [r[1] for r in reports if r[0] == stage]
        total = {r[2] for r in reports if r[0] == stage}
        assert done == sorted(done) and done[-1] == total.pop() and not total
    assert reports[[r[0] for r in reports].index("place")][2] == 800  # the points not in the UMAP fit
    assert all(r[3] is None or r[3] > 0 for r in reports)


def test_final_layout_is_turned_to_match_the_quick_layout(sampled_vs_full):
    features, _, full, sampled, _ = sampled_vs_full
    quick = quick_layout(features)
    for coords in (full, sampled):
        centred = coords - coords.mean(axis=0)
        target = quick - quick.mean(axis=0)
        u, _, vt = np.linalg.svd(centred.T.astype(np.float64) @ target)
        assert np.allclose(u @ vt, np.eye(2), atol=1e-2)  # no further rotation would fit better


def test_weighted_positions_match_inverse_distance_weights():
    fitted = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 8.0]], dtype=np.float32)
    neighbours = np.array([[0, 1], [2, 1]])
    distances = np.array([[1.0, 3.0], [0.0, 2.0]])
    placed = projection._weighted_positions(fitted, neighbours, distances)
    assert np.allclose(placed[0], [1.0, 0.0])  # weights 3/4 and 1/4
    assert np.allclose(placed[1], [0.0, 8.0])  # on a sample point: exactly there


def test_approximate_placement_agrees_with_exact_placement():
    """Samples of 4,096+ points are searched with faiss's inverted-file index; the reference is
    scikit-learn's exact search."""
    from sklearn.neighbors import NearestNeighbors

    features, _ = clustered_features(n=6000, d=16, k=20, seed=2)
    sample = projection._sample_rows(6000, 4500, 0)
    fitted = features[sample][:, :2] * 10
    params = {"place_neighbors": 10, "n_neighbors": 15, "seed": 0}
    approximate = projection._place(features, sample, fitted, params, None, None)
    rest = np.setdiff1d(np.arange(6000), sample)
    distances, neighbours = NearestNeighbors(n_neighbors=10).fit(features[sample]).kneighbors(features[rest])
    exact = approximate.copy()
    exact[rest] = projection._weighted_positions(fitted, neighbours, distances)
    gap = np.linalg.norm(approximate - exact, axis=1)
    assert np.median(gap) < 0.01 * np.ptp(exact, axis=0).max() and np.array_equal(approximate[sample], fitted)
    assert np.mean(gap[rest] < 1e-4) > 0.5  # most rows found exactly the same neighbours


def test_knn_graph_matches_scikit_learn_exact_neighbours():
    from sklearn.neighbors import NearestNeighbors

    features, _ = clustered_features(n=800, d=12, k=5, seed=3)
    features[10] = features[11]  # a duplicate row: each still lists itself first, at distance 0
    neighbours, distances = projection._knn_graph(features, 15)
    ref_distances, ref_neighbours = NearestNeighbors(n_neighbors=15).fit(features).kneighbors(features)
    assert neighbours.shape == distances.shape == (800, 15) and distances.dtype == np.float32
    assert np.array_equal(neighbours[:, 0], np.arange(800)) and np.all(distances[:, 0] == 0)
    assert np.allclose(distances, ref_distances, atol=1e-3)
    assert np.mean(neighbours[:, 1:] == ref_neighbours[:, 1:]) > 0.99  # ties may swap places
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_umap_gets_the_exact_knn_graph_and_builds_no_search_index(tmp_path, monkeypatch):
    """umap-learn's own kNN (pynndescent; minutes of numba compilation cold) is never used."""
    import umap.umap_

    class Refused:
        def __init__(self, *args, **kwargs):
            pytest.fail("umap-learn built its own nearest-neighbour index")

    monkeypatch.setattr(umap.umap_, "nearest_neighbors", Refused)
    monkeypatch.setattr(umap.umap_, "NNDescent", Refused)
    features, labels = clustered_features(n=150, d=16, k=3, seed=4)
    coords = compute_umap(features, cache_key="k", cache_root=tmp_path, pca_dims=8)
    assert coords.shape == (150, 2) and nearest_label_agreement(coords, labels) > 0.95


def test_second_call_loads_from_disk_without_recomputing(umap_run, monkeypatch):
    features, _, root, coords, _ = umap_run
    monkeypatch.setattr(projection, "_compute", lambda *a, **k: pytest.fail("recomputed"))
    again = compute_umap(features, cache_key="emb123", cache_root=root, pca_dims=10)
    assert np.array_equal(again, coords)
    assert np.array_equal(cached_umap(features, cache_key="emb123", cache_root=root, pca_dims=10), coords)
    assert cached_umap(features, cache_key="emb123", cache_root=root, pca_dims=12) is None
    files = sorted(p.name for p in (root / "umap").iterdir())
    assert len(files) == 2 and files[0].startswith("emb123-") and files[1].endswith(".npy.json")


def test_memmapped_float16_features_are_read_in_chunks(tmp_path, monkeypatch):
    features, _ = clustered_features(n=100, d=16)
    np.save(tmp_path / "f.npy", features.astype(np.float16))
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    monkeypatch.setattr(projection, "CHUNK_ROWS", 7)
    monkeypatch.setattr(projection, "_fit_umap", lambda reduced, *a: reduced[:, :2] * 2)
    coords = compute_umap(mapped, cache_key="k", cache_root=tmp_path, pca_dims=4)
    monkeypatch.setattr(projection, "CHUNK_ROWS", 10_000)
    whole = compute_umap(features.astype(np.float16), cache_key="k2", cache_root=tmp_path, pca_dims=4)
    assert np.allclose(coords, whole, atol=1e-5)


def test_changed_parameters_get_their_own_cache_entry(tmp_path, monkeypatch):
    calls = []

    def fake_compute(features, params, progress, cancel):
        calls.append(params)
        return np.full((len(features), 2), len(calls), dtype=np.float32)

    monkeypatch.setattr(projection, "_compute", fake_compute)
    features, _ = clustered_features(n=40)
    first = compute_umap(features, cache_key="k", cache_root=tmp_path)
    other = compute_umap(features, cache_key="k", cache_root=tmp_path, min_dist=0.5)
    resized = compute_umap(features, cache_key="k", cache_root=tmp_path, fit_size=20)
    assert compute_umap(features, cache_key="k", cache_root=tmp_path)[0, 0] == first[0, 0] == 1
    assert other[0, 0] == 2 and resized[0, 0] == 3 and len(calls) == 3
    assert not list((tmp_path / "umap").glob(".*.tmp")), "a temporary file was left behind"


def test_corrupt_cache_file_is_recomputed(tmp_path, monkeypatch):
    features, _ = clustered_features(n=40)
    monkeypatch.setattr(projection, "_compute", lambda f, p, g, c: np.ones((len(f), 2), np.float32))
    compute_umap(features, cache_key="k", cache_root=tmp_path)
    (cached,) = (tmp_path / "umap").glob("*.npy")
    cached.write_bytes(b"garbage")
    assert np.array_equal(compute_umap(features, cache_key="k", cache_root=tmp_path), np.ones((40, 2)))


def test_cancel_before_and_during_the_umap_epochs_raises_and_writes_nothing(tmp_path, umap_run):
    features, *_ = umap_run
    with pytest.raises(Cancelled, match="cancelled"):
        compute_umap(features, cache_key="k", cache_root=tmp_path, pca_dims=10, cancel=lambda: True)
    seen = []
    with pytest.raises(Cancelled):
        compute_umap(features, cache_key="k", cache_root=tmp_path, pca_dims=10,
                     progress=lambda *report: seen.append(report),
                     cancel=lambda: any(r[0] == "umap" and r[1] >= 1 for r in seen))
    epochs = [r[1] for r in seen if r[0] == "umap"]
    assert epochs and max(epochs) < 500  # stopped inside the epoch loop, not after it
    assert not (tmp_path / "umap").exists() or not list((tmp_path / "umap").iterdir())


@pytest.mark.parametrize("n", [0, 1, 2, 10])
def test_tiny_inputs_fall_back_to_pca(tmp_path, n):
    features, _ = clustered_features(n=max(n, 1))
    coords = compute_umap(features[:n], cache_key="tiny", cache_root=tmp_path)
    assert coords.shape == (n, 2) and coords.dtype == np.float32
    assert np.array_equal(quick_layout(features[:n]), coords)
    if n >= 3:
        assert coords[:, 0].std() > 0


def test_quick_layout_is_the_first_two_principal_components():
    from sklearn.decomposition import PCA

    features, labels = clustered_features(n=500, d=32, k=4)
    quick = quick_layout(features)
    reference = PCA(n_components=2, svd_solver="full").fit_transform(features.astype(np.float64))
    assert quick.shape == (500, 2) and quick.dtype == np.float32
    assert np.allclose(np.abs(quick), np.abs(reference), atol=1e-4)
    assert nearest_label_agreement(quick, labels) > 0.9


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(DataError, match="2-D"):
        compute_umap(np.zeros(5), cache_key="k", cache_root=tmp_path)
    features = np.ones((5, 3))
    features[2, 1] = np.nan
    with pytest.raises(DataError, match="row 2"):
        compute_umap(features, cache_key="k", cache_root=tmp_path)
    with pytest.raises(ValueError, match="cache_key"):
        compute_umap(np.ones((5, 3)), cache_key="../escape", cache_root=tmp_path)
    with pytest.raises(ConfigError, match="fit_size"):
        compute_umap(np.ones((5, 3)), cache_key="k", cache_root=tmp_path, fit_size=3)


def test_display_sample_keeps_everything_when_small_and_samples_when_large():
    assert np.array_equal(display_sample(5), np.arange(5))
    sample = display_sample(1000, max_points=100, seed=3)
    assert len(sample) == 100 and len(np.unique(sample)) == 100
    assert np.all(np.diff(sample) > 0) and sample.max() < 1000
    assert np.array_equal(sample, display_sample(1000, max_points=100, seed=3))
    assert not np.array_equal(sample, display_sample(1000, max_points=100, seed=4))


def test_unseeded_map_runs_in_parallel_and_has_its_own_cache_entry(tmp_path, monkeypatch):
    import umap

    made = []
    real = umap.UMAP

    def recording(**kwargs):
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(umap, "UMAP", recording)
    features, labels = clustered_features(n=120)
    seeded = compute_umap(features, cache_key="k", cache_root=tmp_path, pca_dims=10)
    parallel = compute_umap(features, cache_key="k", cache_root=tmp_path, pca_dims=10, seed=None)
    assert [(m["random_state"], m["n_jobs"]) for m in made] == [(0, 1), (None, -1)]
    assert seeded.shape == parallel.shape == (120, 2) and np.isfinite(parallel).all()
    assert len(list((tmp_path / "umap").glob("*.npy"))) == 2


def test_app_gets_the_quick_layout_first_and_the_final_map_when_ready(tmp_path, monkeypatch):
    from ui import map_cache

    features, _ = clustered_features(n=200)
    prepared = types.SimpleNamespace(features=features, embedding=types.SimpleNamespace(key="e1"))
    release = threading.Event()
    final = np.arange(400, dtype=np.float32).reshape(200, 2)

    def slow_map(prepared, *, progress=None, cancel=None):
        progress("umap", 3, 10, 1.5)
        release.wait(60)
        return compute_umap(prepared.features, cache_key=map_cache.map_key(prepared), cache_root=tmp_path)

    monkeypatch.setattr(map_cache, "compute_map", slow_map)
    monkeypatch.setattr(map_cache, "cached_map", lambda p: map_cache.cached_umap(
        p.features, cache_key=map_cache.map_key(p), cache_root=tmp_path))
    monkeypatch.setattr(projection, "_compute", lambda *a: final)
    map_cache._jobs().clear()
    first = map_cache.map_coords(prepared)
    assert not first.final and map_cache.map_pending(prepared)
    assert np.array_equal(first.coords, quick_layout(features, seed=None))
    assert map_cache.map_coords(prepared, wait_s=0.0).coords is first.coords  # computed once
    deadline = time.monotonic() + 60  # the job reports from its own thread: wait for its report
    while getattr(map_cache.map_progress(prepared), "stage", None) != "umap" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "about 5 s left" in map_cache.progress_text(map_cache.map_progress(prepared))
    release.set()
    map_cache._jobs()["umap-e1"].future.result(timeout=60)
    done = map_cache.map_coords(prepared)
    assert done.final and not map_cache.map_pending(prepared) and np.array_equal(done.coords, final)
    assert map_cache.map_coords(prepared).coords is done.coords  # the same map on every later call
    map_cache._jobs().clear()
    reloaded = map_cache.map_coords(prepared)  # a new process: the map from disk at once, no job
    assert reloaded.final and np.array_equal(reloaded.coords, final) and not map_cache.map_pending(prepared)


def test_a_failed_map_raises_once_and_is_retried(monkeypatch):
    from ui import map_cache

    features, _ = clustered_features(n=50)
    prepared = types.SimpleNamespace(features=features, embedding=types.SimpleNamespace(key="e2"))
    calls = []

    def failing(prepared, *, progress=None, cancel=None):
        calls.append(1)
        raise DataError("broken features")

    monkeypatch.setattr(map_cache, "compute_map", failing)
    map_cache._jobs().clear()
    with pytest.raises(DataError, match="broken"):
        map_cache.map_coords(prepared, wait_s=5)
    with pytest.raises(DataError):
        map_cache.map_coords(prepared, wait_s=5)
    assert len(calls) == 2
    map_cache._jobs().clear()


def test_a_map_on_disk_is_returned_at_once_without_a_background_job(tmp_path, monkeypatch):
    from ui import map_cache

    features, _ = clustered_features(n=60)
    prepared = types.SimpleNamespace(features=features, embedding=types.SimpleNamespace(key="e3"))
    monkeypatch.setattr(projection, "_compute", lambda f, *a: np.full((len(f), 2), 7, np.float32))
    compute_umap(features, cache_key=map_cache.map_key(prepared), cache_root=tmp_path, seed=None)
    monkeypatch.setattr(map_cache, "cached_map", lambda p: map_cache.cached_umap(
        p.features, cache_key=map_cache.map_key(p), cache_root=tmp_path, seed=None))
    monkeypatch.setattr(map_cache, "compute_map", lambda *a, **k: pytest.fail("recomputed"))
    map_cache._jobs().clear()
    layout = map_cache.map_coords(prepared, wait_s=0.0)
    assert layout.final and np.all(layout.coords == 7) and not map_cache.map_pending(prepared)
    map_cache._jobs().clear()


def test_seeded_sampled_layout_repeats_exactly_with_the_inverted_file_index(tmp_path, monkeypatch):
    monkeypatch.setattr(projection, "EXACT_BELOW", 100)  # the 400-point sample is searched by faiss IVF
    features, labels = clustered_features(n=1000, d=24, k=6, seed=5)
    first = compute_umap(features, cache_key="a", cache_root=tmp_path, pca_dims=12, fit_size=400)
    again = compute_umap(features, cache_key="b", cache_root=tmp_path, pca_dims=12, fit_size=400)
    assert np.array_equal(first, again) and nearest_label_agreement(first, labels) > 0.95


def test_warming_numba_runs_the_apps_layout_in_a_folder_it_removes(monkeypatch):
    calls = []

    def recording(features, **kwargs):
        calls.append(kwargs)
        return np.zeros((len(features), 2), np.float32)

    monkeypatch.setattr(projection, "compute_umap", recording)
    assert projection.warm_numba_cache() >= 0
    (call,) = calls
    assert call["seed"] is None  # the app's parallel code path is the one compiled
    assert not Path(call["cache_root"]).exists()
