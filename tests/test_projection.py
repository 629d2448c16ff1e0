"""UMAP map: shape, neighbourhoods kept, disk cache reused, tiny inputs, display sampling."""
import numpy as np
import pytest

from clipcleaner_core import projection
from clipcleaner_core.errors import DataError
from clipcleaner_core.projection import compute_umap, display_sample


def clustered_features(n=300, d=64, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    labels = np.arange(n) % k
    features = centres[labels] + rng.normal(size=(n, d))
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.fixture(scope="module")
def umap_run(tmp_path_factory):
    """The one real UMAP fit of this module (the first one in a process pays numba compilation)."""
    features, labels = clustered_features()
    root = tmp_path_factory.mktemp("cache")
    stages = []
    coords = compute_umap(features, cache_key="emb123", cache_root=root, pca_dims=10,
                          progress=lambda stage, done, total, rate: stages.append(stage))
    return features, labels, root, coords, stages


def test_umap_map_has_one_point_per_sample_and_keeps_clusters(umap_run):
    _, labels, _, coords, stages = umap_run
    assert coords.shape == (300, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(axis=1)
    assert (labels[nearest] == labels).mean() > 0.95
    assert stages == ["pca", "umap", "done"]


def test_second_call_loads_from_disk_without_recomputing(umap_run, monkeypatch):
    features, _, root, coords, _ = umap_run
    monkeypatch.setattr(projection, "_compute", lambda *a, **k: pytest.fail("recomputed"))
    again = compute_umap(features, cache_key="emb123", cache_root=root, pca_dims=10)
    assert np.array_equal(again, coords)
    files = sorted(p.name for p in (root / "umap").iterdir())
    assert len(files) == 2 and files[0].startswith("emb123-") and files[1].endswith(".npy.json")


def test_changed_parameters_get_their_own_cache_entry(tmp_path, monkeypatch):
    calls = []

    def fake_compute(features, params, progress):
        calls.append(params)
        return np.full((len(features), 2), len(calls), dtype=np.float32)

    monkeypatch.setattr(projection, "_compute", fake_compute)
    features, _ = clustered_features(n=40)
    first = compute_umap(features, cache_key="k", cache_root=tmp_path)
    other = compute_umap(features, cache_key="k", cache_root=tmp_path, min_dist=0.5)
    assert compute_umap(features, cache_key="k", cache_root=tmp_path)[0, 0] == first[0, 0] == 1
    assert other[0, 0] == 2 and len(calls) == 2
    assert not list((tmp_path / "umap").glob(".*.tmp")), "a temporary file was left behind"


def test_corrupt_cache_file_is_recomputed(tmp_path, monkeypatch):
    features, _ = clustered_features(n=40)
    monkeypatch.setattr(projection, "_compute", lambda f, p, g: np.ones((len(f), 2), np.float32))
    compute_umap(features, cache_key="k", cache_root=tmp_path)
    (cached,) = (tmp_path / "umap").glob("*.npy")
    cached.write_bytes(b"garbage")
    assert np.array_equal(compute_umap(features, cache_key="k", cache_root=tmp_path), np.ones((40, 2)))


@pytest.mark.parametrize("n", [0, 1, 2, 10])
def test_tiny_inputs_fall_back_to_pca(tmp_path, n):
    features, _ = clustered_features(n=max(n, 1))
    coords = compute_umap(features[:n], cache_key="tiny", cache_root=tmp_path)
    assert coords.shape == (n, 2) and coords.dtype == np.float32
    if n >= 3:
        assert coords[:, 0].std() > 0


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(DataError, match="2-D"):
        compute_umap(np.zeros(5), cache_key="k", cache_root=tmp_path)
    features = np.ones((5, 3))
    features[2, 1] = np.nan
    with pytest.raises(DataError, match="row 2"):
        compute_umap(features, cache_key="k", cache_root=tmp_path)
    with pytest.raises(ValueError, match="cache_key"):
        compute_umap(np.ones((5, 3)), cache_key="../escape", cache_root=tmp_path)


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
