"""The numeric boundary: labels, features and probabilities are checked once, naming the rows."""
import numpy as np
import pytest

from clipcleaner_core.errors import DataError
from clipcleaner_core.validation import (
    check_features,
    check_labels,
    check_probabilities,
    check_same_length,
    integer_label,
)


@pytest.mark.parametrize("value, expected", [
    (1, 1), (np.int32(4), 4), (2.0, 2), ("1", 1), ("01", 1), (" 1", 1), ("1.0", 1), ("+3", 3),
    ("-2", -2), (0.5, None), ("0.5", None), ("nan", None), (float("nan"), None), (None, None),
    ("", None), ("cat", None), (True, None), ("inf", None),
])
def test_integer_label_spellings(value, expected):
    assert integer_label(value) == expected


def test_integer_spellings_are_one_class():
    ids = check_labels(np.array(["1", "01", "1.0", " 1", "0"], dtype=object))
    assert ids.tolist() == [1, 1, 1, 1, 0] and ids.dtype == np.int64
    assert check_labels(np.array([0.0, 2.0, 1.0])).tolist() == [0, 2, 1]


@pytest.mark.parametrize("labels, needle", [
    (np.array([0.0, np.nan, 1.0, np.nan]), "rows 1, 3"),
    (np.array(["0", "None", "1"], dtype=object), "row 1"),
    (np.array([0, 0.5, 1.0]), "row 1 (0.5)"),
    (np.array(["cat", "dog", "1"]), "rows 0 ('cat'), 1 ('dog')"),
    (np.array([0, -1, 2]), "row 1 (-1)"),
    (np.array([True, False]), "booleans"),
    (np.array([], dtype=np.int64), "N=0"),
])
def test_bad_labels_name_the_rows(labels, needle):
    with pytest.raises(DataError, match="labels") as info:
        check_labels(labels)
    assert needle in str(info.value)


def test_label_beyond_the_class_count_is_refused():
    with pytest.raises(DataError, match="row 2 \\(5\\)"):
        check_labels(np.array([0, 1, 5]), num_classes=3)


def test_many_bad_rows_are_counted_not_all_listed():
    labels = np.full(50, np.nan)
    message = str(pytest.raises(DataError, check_labels, labels).value)
    assert "(50 in all)" in message and len(message) < 300


def test_features_with_nan_or_inf_name_the_rows():
    features = np.ones((6, 3), dtype=np.float32)
    features[2, 1] = np.nan
    features[4, 0] = np.inf
    with pytest.raises(DataError, match=r"text features: NaN or infinite values in rows 2, 4"):
        check_features(features, name="text features")


@pytest.mark.parametrize("features, needle", [
    (np.zeros((0, 4)), "N=0"), (np.zeros((3, 0)), "D=0"), (np.zeros(5), "2-D"),
    (np.array([["a", "b"]]), "numbers"),
])
def test_features_of_the_wrong_shape_or_kind(features, needle):
    with pytest.raises(DataError, match=needle):
        check_features(features)


def test_features_shape_and_zero_rows():
    features = np.eye(3, dtype=np.float32)
    assert check_features(features, n=3, dim=3) is features  # no copy for float input
    with pytest.raises(DataError, match="3 dimensions but 4"):
        check_features(features, dim=4)
    features[1] = 0
    with pytest.raises(DataError, match="all-zero vector in row 1"):
        check_features(features, nonzero=True)


def test_probabilities():
    good = np.array([[0.2, 0.8], [1.0, 0.0]])
    assert check_probabilities(good, num_classes=2) is not None
    check_probabilities(np.log(good), log=True)
    with pytest.raises(DataError, match="row 1"):
        check_probabilities(np.array([[0.2, 0.8], [0.5, 0.6]]))
    with pytest.raises(DataError, match="row 0"):
        check_probabilities(np.array([[np.nan, 1.0], [0.5, 0.5]]))


def test_same_length():
    assert check_same_length(a=np.zeros(3), b=np.zeros((3, 2)), c=None) == 3
    with pytest.raises(DataError, match="a has 3, b has 4"):
        check_same_length(a=np.zeros(3), b=np.zeros(4))
