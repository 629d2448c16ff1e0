"""Metrics against hand-computed values."""
import numpy as np
import pytest

from clipcleaner_core.metrics import per_class_table, selection_metrics

GIVEN = np.array([0, 0, 0, 1, 1, 1])
TRUE = np.array([0, 0, 1, 1, 1, 0])  # samples 2 and 5 are mislabelled
CLEAN = np.array([True, True, True, True, False, False])
SCORE = np.array([0.9, 0.8, 0.3, 0.7, 0.6, 0.1])


def test_selection_metrics_by_hand():
    m = selection_metrics(CLEAN, GIVEN, TRUE, SCORE)
    assert (m["n"], m["kept"], m["flagged"]) == (6, 4, 2)
    assert m["estimated_noise_rate"] == pytest.approx(2 / 6)
    assert m["true_noise_rate"] == pytest.approx(2 / 6)
    assert m["precision"] == pytest.approx(3 / 4)  # kept 0,1,2,3; 2 is wrong
    assert m["recall"] == pytest.approx(3 / 4)  # correct 0,1,3,4; 4 dropped
    assert m["f1"] == pytest.approx(0.75)
    # wrong samples have scores 0.3, 0.1; correct 0.9, 0.8, 0.7, 0.6 -> perfect ranking
    assert m["auroc"] == pytest.approx(1.0)


def test_without_truth_only_the_estimate():
    m = selection_metrics(CLEAN, GIVEN)
    assert m == {"n": 6, "kept": 4, "flagged": 2, "estimated_noise_rate": pytest.approx(1 / 3)}


def test_auroc_nan_when_one_kind_only():
    assert np.isnan(selection_metrics(CLEAN, GIVEN, GIVEN, SCORE)["auroc"])


def test_per_class_table_by_hand():
    table = per_class_table(CLEAN, GIVEN, TRUE, num_classes=3)
    assert list(table.columns) == ["class", "n", "kept", "flagged", "precision", "recall",
                                   "noise_rate_true"]
    assert table["n"].tolist() == [3, 3, 0]
    assert table["kept"].tolist() == [3, 1, 0]
    np.testing.assert_allclose(table["precision"][:2], [2 / 3, 1.0])
    np.testing.assert_allclose(table["recall"][:2], [1.0, 0.5])
    np.testing.assert_allclose(table["noise_rate_true"][:2], [1 / 3, 1 / 3])
    assert table.loc[2, ["precision", "recall", "noise_rate_true"]].isna().all()
    assert per_class_table(CLEAN, GIVEN)["precision"].isna().all()
