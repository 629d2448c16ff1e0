"""The score table's schema: one registry of scores, decisions folded in the same way everywhere."""
import numpy as np
import pandas as pd
import pytest

from clipcleaner_core.errors import ConfigError, DataError
from clipcleaner_core.schema import (
    DECISION_CATEGORIES, SCORES, SCORE_NAMES, TABLE_COLUMNS, apply_decisions, decision_effects,
    kept_mask, score,
)
from clipcleaner_core.selection import SelectionConfig


def test_registry_matches_the_config_switches_and_table_columns():
    for entry in SCORES:
        assert hasattr(SelectionConfig(), entry.flag)
        assert hasattr(SelectionConfig(), entry.threshold)
        assert entry.column in TABLE_COLUMNS and entry.gate_column in TABLE_COLUMNS
    assert SCORE_NAMES[:4] == ("zs_loss", "zs_consistency", "lr_loss", "lr_consistency")  # the paper's
    with pytest.raises(ConfigError, match="valid scores: zs_loss"):
        score("zs_los")


def _table(n=6):
    return pd.DataFrame({"index": np.arange(10, 10 + n), "is_clean": [True, False] * (n // 2),
                         "is_label_issue": [False, True] * (n // 2),
                         "review_decision": pd.Categorical.from_codes(np.zeros(n, np.int8),
                                                                      list(DECISION_CATEGORIES)),
                         "final_label": np.arange(n) % 3})


def test_latest_decision_wins_and_unknown_indices_are_ignored():
    decisions = pd.DataFrame({"index": [11, 12, 11, 99, 13],
                              "decision": ["keep", "drop", "relabel", "drop", "relabel"],
                              "final_label": [None, None, 2, None, 0]})
    out = apply_decisions(_table(), decisions)
    assert out["review_decision"].astype(str).tolist() == ["", "relabel", "drop", "relabel", "", ""]
    assert out["is_clean"].tolist() == [True, True, False, True, True, False]
    assert (out["is_label_issue"] == ~out["is_clean"]).all()
    assert out["final_label"].tolist() == [0, 2, 2, 0, 1, 2]
    np.testing.assert_array_equal(kept_mask(out), out["is_clean"].to_numpy())


def test_unsorted_index_matches_the_sorted_result():
    table = _table().iloc[::-1].reset_index(drop=True)
    decisions = pd.DataFrame({"index": [15, 10], "decision": ["drop", "keep"], "final_label": [None, None]})
    out = apply_decisions(table, decisions)
    assert dict(zip(out["index"], out["review_decision"].astype(str))) == {
        15: "drop", 14: "", 13: "", 12: "", 11: "", 10: "keep"}


def test_bad_decisions_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="valid decisions: keep, drop, relabel"):
        decision_effects(np.arange(3), pd.DataFrame({"index": [1], "decision": ["maybe"]}))
    with pytest.raises(DataError, match="needs a final_label"):
        decision_effects(np.arange(3), pd.DataFrame({"index": [1], "decision": ["relabel"],
                                                     "final_label": [None]}))


def test_kept_mask_reads_plain_string_decisions_from_a_csv_round_trip():
    table = _table()
    table["review_decision"] = ["", "keep", "drop", "", "relabel", np.nan]
    np.testing.assert_array_equal(kept_mask(table), [True, True, False, False, True, False])


def test_applying_more_decisions_keeps_the_earlier_ones_in_the_review_column():
    first = apply_decisions(_table(), pd.DataFrame({"index": [10, 11], "decision": ["drop", "relabel"],
                                                    "final_label": [None, 2]}))
    second = apply_decisions(first, pd.DataFrame({"index": [12], "decision": ["keep"], "final_label": [None]}))
    assert second["review_decision"].astype(str).tolist()[:3] == ["drop", "relabel", "keep"]
    assert not second.loc[0, "is_clean"] and second.loc[1, "final_label"] == 2
