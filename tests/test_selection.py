"""Selection: recovers flipped labels, thresholds and switches move the set as the math says."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipcleaner_core.metrics import make_synthetic_problem, selection_metrics
from clipcleaner_core.scoring import ScoringConfig, fit_scores
from clipcleaner_core.selection import (
    PRESETS,
    SCORE_NAMES,
    TABLE_COLUMNS,
    TRAIN_PRESETS,
    SelectionConfig,
    apply_decisions,
    score_table,
    select,
)


def _fit(pr, k=10, **config):
    return fit_scores(pr["features"], pr["labels"], num_classes=k,
                      text_features=pr["text_features"], text_labels=pr["text_labels"],
                      config=ScoringConfig(**config))


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(2000, 10, 64, noise_rate=0.4, spread=2.0, seed=0)


@pytest.fixture(scope="module")
def fit(problem):
    return _fit(problem)


def test_selection_recovers_flipped_labels(problem, fit):
    sel = select(fit)
    m = selection_metrics(sel.clean_mask, problem["labels"], problem["true_labels"],
                          sel.label_score)
    assert m["precision"] >= 0.9 and m["recall"] >= 0.5 and m["auroc"] >= 0.9
    wrong = problem["labels"] != problem["true_labels"]
    assert (sel.suggested_label[wrong] == problem["true_labels"][wrong]).mean() >= 0.9
    assert ((sel.label_score >= 0) & (sel.label_score <= 1)).all()


@settings(max_examples=25, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_raising_theta_cons_never_grows_the_clean_set(fit, low, high, theta_gmm):
    low, high = sorted((low, high))
    loose = select(fit, SelectionConfig(theta_cons=low, theta_gmm=theta_gmm, refill=False))
    strict = select(fit, SelectionConfig(theta_cons=high, theta_gmm=theta_gmm, refill=False))
    assert not (strict.clean_mask & ~loose.clean_mask).any()


@pytest.mark.parametrize("off", SCORE_NAMES)
def test_disabling_a_score_never_shrinks_the_set(fit, off):
    full = select(fit, SelectionConfig(refill=False))
    fewer = select(fit, SelectionConfig(refill=False, **{f"use_{off}": False}))
    assert not (full.clean_mask & ~fewer.clean_mask).any()
    assert off not in fewer.enabled


def test_refill_gives_an_emptied_class_its_best_samples():
    pr = make_synthetic_problem(600, 3, 16, noise_rate=0.2, spread=1.0, seed=2)
    fit = _fit(pr, k=3)
    labels = fit.labels.copy()
    # a strict threshold empties the classes; refill brings back each class's best samples
    strict = SelectionConfig(theta_cons=1.0, theta_gmm=1.0)
    no_refill = select(fit, SelectionConfig(theta_cons=1.0, theta_gmm=1.0, refill=False))
    sel = select(fit, strict)
    empty = [k for k in range(3) if not no_refill.clean_mask[labels == k].any()]
    assert empty
    kept = [int(no_refill.clean_mask[labels == k].sum()) for k in range(3)]
    n_fill = max(min([c for c in kept if c] or [0]), 600 // 9, 1)
    for k in empty:
        members = np.flatnonzero(labels == k)
        best = members[np.argsort(-fit.zs_loss_score[members], kind="stable")[:n_fill]]
        assert set(np.flatnonzero(sel.clean_mask & (labels == k))) == set(best)
        assert sel.refilled[best].all()


def test_zero_shot_off_uses_the_probe_and_probe_off_uses_zero_shot(problem):
    lr_only = select(_fit(problem, zeroshot=False))
    assert lr_only.enabled == ("lr_loss", "lr_consistency")
    zs_only = select(_fit(problem, probe="off"))
    assert zs_only.enabled == ("zs_loss", "zs_consistency")
    for sel in (lr_only, zs_only):
        m = selection_metrics(sel.clean_mask, problem["labels"], problem["true_labels"])
        assert m["precision"] >= 0.9


def test_cross_val_mode_selects_well(problem):
    sel = select(_fit(problem, probe="cross-val", n_folds=3))
    m = selection_metrics(sel.clean_mask, problem["labels"], problem["true_labels"])
    assert m["precision"] >= 0.9


def test_single_sample_class_keeps_its_sample():
    pr = make_synthetic_problem(300, 3, 16, noise_rate=0.0, seed=4)
    labels = pr["labels"].copy()
    labels[7] = 3  # the only sample of class 3
    fit = fit_scores(pr["features"], labels, num_classes=4,
                     text_features=np.concatenate([pr["text_features"], pr["text_features"][:1]]),
                     text_labels=np.concatenate([pr["text_labels"], [3]]),
                     config=ScoringConfig())
    sel = select(fit, SelectionConfig(theta_cons=0.0, refill=False))
    assert sel.clean_mask[7]


def test_no_enabled_score_is_an_error(fit):
    off = {f"use_{name}": False for name in SCORE_NAMES}
    with pytest.raises(ValueError, match="enable at least one"):
        select(fit, SelectionConfig(**off))


def test_table_columns_exactly_and_nan_for_disabled(problem, fit):
    sel = select(fit, SelectionConfig(use_zs_loss=False))
    table = score_table(fit, sel, paths=[f"img{i}.png" for i in range(2000)])
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["zs_loss_score"].isna().all() and table["zs_clean_prob"].isna().all()
    assert table["lr_loss_score"].notna().all()
    assert (table["is_label_issue"] == ~table["is_clean"]).all()
    assert (table["review_decision"] == "").all()
    assert (table["final_label"] == table["given_label"]).all()
    truth = score_table(fit, sel, true_labels=problem["true_labels"])
    assert tuple(truth.columns) == TABLE_COLUMNS + ("true_label", "is_noisy")
    assert (truth["is_noisy"] == (problem["labels"] != problem["true_labels"])).all()


def test_apply_decisions_keep_drop_relabel(fit):
    sel = select(fit)
    table = score_table(fit, sel, index=np.arange(2000) + 100)
    flagged = int(table.loc[~table["is_clean"], "index"].iloc[0])
    kept = int(table.loc[table["is_clean"], "index"].iloc[0])
    other = int(table["index"].iloc[-1])
    decisions = pd.DataFrame({
        "index": [flagged, kept, other],
        "decision": ["keep", "drop", "relabel"],
        "final_label": [None, None, 3],
    })
    out = apply_decisions(table, decisions).set_index("index")
    assert out.loc[flagged, "is_clean"] and not out.loc[flagged, "is_label_issue"]
    assert not out.loc[kept, "is_clean"] and out.loc[kept, "is_label_issue"]
    assert out.loc[other, "final_label"] == 3 and out.loc[other, "review_decision"] == "relabel"
    assert (out["review_decision"] != "").sum() == 3
    with pytest.raises(ValueError, match="keep, drop, relabel"):
        apply_decisions(table, pd.DataFrame({"index": [flagged], "decision": ["delete"]}))


def test_presets_follow_the_paper():
    assert all(p["theta_gmm"] == 0.5 for p in PRESETS.values())
    assert PRESETS["webvision"]["theta_cons"] == 1.0
    assert PRESETS["cifar100-sym"]["theta_cons"] == 0.8
    assert SelectionConfig.from_preset("webvision").theta_cons == 1.0
    assert TRAIN_PRESETS["webvision"]["milestones"] == (80, 120)
    assert TRAIN_PRESETS["animal10n"]["theta_r2"] == 0.95
    with pytest.raises(ValueError, match="valid presets"):
        SelectionConfig.from_preset("imagenet")
