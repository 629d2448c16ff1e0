"""Noise generators hit the asked rate, are reproducible by seed, and are saved for reproduction."""
import json

import numpy as np
import pytest

from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.data.noise import (
    CIFAR10_CLASSES,
    NoiseSpec,
    apply_noise,
    asymmetric_cifar10_noise,
    flip_rate,
    instance_dependent_noise,
    noise_dir,
    noise_from_file,
    parse_noise_spec,
    save_noise,
    symmetric_noise,
)
from clipcleaner_core.errors import DataError


def _true(n=5000, k=10, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def _memory_dataset(n=400, k=10, names=None, root="."):
    rng = np.random.default_rng(1)
    return Dataset(name="mem", kind="cifar10", root=root, class_names=names or [str(i) for i in range(k)],
                   labels=rng.integers(0, k, n), paths=[f"train/{i:05d}" for i in range(n)],
                   images=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.8])
def test_symmetric_noise_rate_and_effective_flip_rate(rate):
    true = _true()
    noisy = symmetric_noise(true, 10, rate, seed=3)
    assert flip_rate(true, noisy) == pytest.approx(rate * 0.9, abs=0.02)
    np.testing.assert_array_equal(noisy, symmetric_noise(true, 10, rate, seed=3))
    if rate:
        assert not np.array_equal(noisy, symmetric_noise(true, 10, rate, seed=4))


def test_asymmetric_noise_maps_exactly_the_stated_pairs():
    true = _true()
    noisy = asymmetric_cifar10_noise(true, 0.4, seed=0)
    name = CIFAR10_CLASSES.index
    allowed = {(name("truck"), name("automobile")), (name("bird"), name("airplane")),
               (name("deer"), name("horse")), (name("cat"), name("dog")), (name("dog"), name("cat"))}
    changed = set(zip(true[true != noisy].tolist(), noisy[true != noisy].tolist()))
    assert changed == allowed
    for source, _ in allowed:
        members = true == source
        assert np.mean(noisy[members] != source) == pytest.approx(0.4, abs=0.002)
    np.testing.assert_array_equal(noisy, asymmetric_cifar10_noise(true, 0.4, seed=0))


def test_asymmetric_noise_follows_class_names_and_refuses_other_datasets():
    shuffled = tuple(reversed(CIFAR10_CLASSES))
    true = np.full(100, shuffled.index("cat"))
    noisy = asymmetric_cifar10_noise(true, 0.5, seed=0, class_names=shuffled)
    assert set(noisy.tolist()) == {shuffled.index("cat"), shuffled.index("dog")}
    with pytest.raises(DataError, match="CIFAR-10 classes"):
        asymmetric_cifar10_noise(true, 0.5, class_names=[str(i) for i in range(10)])


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_instance_dependent_noise_rate_seed_and_dependence_on_features(rate):
    rng = np.random.default_rng(0)
    true = _true(4000)
    features = rng.standard_normal((4000, 48))
    noisy = instance_dependent_noise(true, features, 10, rate, seed=1)
    assert flip_rate(true, noisy) == pytest.approx(rate, abs=0.03)
    np.testing.assert_array_equal(noisy, instance_dependent_noise(true, features, 10, rate, seed=1))
    # same features, same class -> the flip targets concentrate (part-dependent, not uniform)
    twins = instance_dependent_noise(np.zeros(2000, int), np.tile(features[:1], (2000, 1)), 10, rate, seed=1)
    targets = twins[twins != 0]
    top_two = np.sort(np.bincount(targets, minlength=10))[-2:].sum()
    assert top_two > 0.8 * len(targets)  # uniform flips would put ~22% in the top two


def test_parse_noise_spec():
    assert parse_noise_spec("sym:0.4") == NoiseSpec("sym", 0.4, 0)
    assert parse_noise_spec("asym:0.2:7") == NoiseSpec("asym", 0.2, 7)
    assert parse_noise_spec("file:/x/labels.csv") == NoiseSpec("file", 0.0, 0, "/x/labels.csv")
    assert parse_noise_spec("none") is None
    for bad in ["blur:0.3", "sym:1.5", "sym:abc", "file:"]:
        with pytest.raises(DataError):
            parse_noise_spec(bad)


def test_apply_noise_keeps_truth_records_spec_and_saves_in_the_cache_not_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    dataset = _memory_dataset(root=tmp_path / "data")
    noisy = apply_noise(dataset, "sym:0.5:2")
    assert not any((tmp_path / "data").iterdir())  # nothing written into the dataset's folder
    np.testing.assert_array_equal(noisy.true_labels, dataset.labels)
    assert noisy.noise["mode"] == "sym" and noisy.noise["seed"] == 2
    assert noisy.noise["flip_rate"] == pytest.approx(np.mean(noisy.is_noisy))
    saved = noise_dir(dataset) / "noise-sym-0.5-2.json"
    assert noisy.noise["path"] == str(saved) and saved.is_relative_to(tmp_path / "cache")
    payload = json.loads(saved.read_text())
    assert payload["noisy_labels"] == noisy.labels.tolist()
    # noise on an already-noisy dataset starts again from the true labels
    again = apply_noise(noisy, NoiseSpec("sym", 0.1, 0))
    np.testing.assert_array_equal(again.true_labels, dataset.labels)
    assert again.noise["flip_rate"] < 0.2
    assert noisy.fingerprint() != dataset.fingerprint()


def test_apply_noise_from_saved_file_reproduces_it_exactly(tmp_path):
    dataset = _memory_dataset(root=tmp_path)
    first = apply_noise(dataset, NoiseSpec("idn", 0.3, 5))
    replay = apply_noise(dataset, NoiseSpec("file", path=first.noise["path"]))
    np.testing.assert_array_equal(replay.labels, first.labels)
    assert replay.noise["flip_rate"] == first.noise["flip_rate"]


def test_noise_file_formats_and_mismatches(tmp_path):
    names = ["cat", "dog", "eel"]
    dataset = Dataset(name="f", kind="manifest", root=tmp_path, class_names=names,
                      labels=[0, 1, 2, 0], paths=["a", "b", "c", "d"])
    (tmp_path / "n.csv").write_text("clean,noisy\ncat,dog\ndog,dog\neel,cat\ncat,cat\n")
    np.save(tmp_path / "n.npy", np.array([1, 1, 0, 0]))
    (tmp_path / "n.json").write_text("[1, 1, 0, 0]")
    for name in ["n.csv", "n.npy", "n.json"]:
        out = apply_noise(dataset, NoiseSpec("file", path=str(tmp_path / name)))
        assert out.labels.tolist() == [1, 1, 0, 0] and out.noise["flip_rate"] == 0.5
    (tmp_path / "wrong.csv").write_text("clean,noisy\ncat,dog\neel,dog\neel,cat\ncat,cat\n")
    with pytest.raises(DataError, match="row 2"):
        apply_noise(dataset, NoiseSpec("file", path=str(tmp_path / "wrong.csv")))
    (tmp_path / "short.json").write_text("[1, 1]")
    with pytest.raises(DataError, match="2 labels but the dataset has 4"):
        apply_noise(dataset, NoiseSpec("file", path=str(tmp_path / "short.json")))
    (tmp_path / "unknown.csv").write_text("noisy\ncat\nyak\n")
    with pytest.raises(DataError, match="'yak' in row 2"):
        noise_from_file(tmp_path / "unknown.csv", class_names=names)


def test_in_memory_dataset_noise_goes_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    dataset = _memory_dataset().replace(kind="demo")
    out = apply_noise(dataset, "sym:0.2")
    assert out.noise["path"].startswith(str(tmp_path / "cache"))
    save_noise(out.labels, NoiseSpec("sym", 0.2), tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text())["rate"] == 0.2


def test_noise_file_already_in_a_read_only_cache_is_reused(tmp_path, monkeypatch):
    """A second run with the same noise reuses its file: it works when the cache became read-only."""
    import os

    from clipcleaner_core.data import apply_noise, load_dataset

    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    dataset = load_dataset("demo")
    first = apply_noise(dataset, "sym:0.3")
    saved = first.noise["path"]
    folder = os.path.dirname(saved)
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: make the write fail instead
            from clipcleaner_core.data import noise

            monkeypatch.setattr(noise, "save_noise", lambda *a, **k: (_ for _ in ()).throw(OSError(30, "read-only")))
        again = apply_noise(dataset, "sym:0.3")
    finally:
        os.chmod(folder, 0o755)
    assert again.noise["path"] == saved
    assert (again.labels == first.labels).all()
