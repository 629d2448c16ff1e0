"""The offline demo: real digits, known noise, deterministic."""
import numpy as np
import pytest

from clipcleaner_core.data.demo import holdout_split, load_demo
from clipcleaner_core.errors import DataError


@pytest.fixture(scope="module")
def demo():
    return load_demo()


def test_demo_has_1797_digits_in_10_classes_as_32px_rgb(demo):
    assert len(demo) == 1797 and demo.num_classes == 10
    assert demo.class_names == tuple("0123456789")
    assert demo.images.shape == (1797, 32, 32, 3) and demo.images.dtype == np.uint8
    assert demo.images.max() > 200  # strokes are bright, not a scaled-down 0..16 range
    assert demo.kind == "demo" and demo.spec == "demo" and demo.has_truth


def test_demo_noise_is_about_40_percent_symmetric_and_recorded(demo):
    flipped = float(np.mean(demo.labels != demo.true_labels))
    assert 0.33 <= flipped <= 0.40  # 40% resampled uniformly over 10 classes: ~36% change
    assert demo.noise["mode"] == "sym" and demo.noise["rate"] == 0.4
    assert demo.noise["flip_rate"] == pytest.approx(flipped)
    assert np.bincount(demo.true_labels, minlength=10).min() > 170


def test_demo_is_deterministic_and_seeded(demo):
    again = load_demo()
    np.testing.assert_array_equal(again.labels, demo.labels)
    assert again.fingerprint() == demo.fingerprint()
    other = load_demo(seed=1)
    assert not np.array_equal(other.labels, demo.labels)
    np.testing.assert_array_equal(other.images, demo.images)
    clean = load_demo(noise_rate=0, size=16)
    assert clean.images.shape[1:] == (16, 16, 3) and clean.noise is None
    np.testing.assert_array_equal(clean.labels, demo.true_labels)


def test_holdout_split_is_a_seeded_partition():
    train, test = holdout_split(1797)
    assert len(test) == 359 and len(train) == 1438
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1797
    again_train, again_test = holdout_split(1797)
    np.testing.assert_array_equal(test, again_test)
    assert not np.array_equal(test, holdout_split(1797, seed=1)[1])
    with pytest.raises(DataError):
        holdout_split(10, fraction=1.0)
