"""The pipeline: prepare once (cached), select in milliseconds, on the demo and on a tiny CLIP."""
import dataclasses

import numpy as np
import pytest

from clipcleaner_core.data import load_dataset
from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.pipeline import prepare, select_samples
from clipcleaner_core.scoring import ScoringConfig
from clipcleaner_core.selection import SelectionConfig
from clipcleaner_core.testing import make_tiny_clip


@pytest.fixture(scope="module")
def demo_prepared(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return prepare(load_dataset("demo"), EncoderSpec(model="pixels"), cache_root=cache), cache


def test_demo_selection_finds_the_flipped_labels(demo_prepared):
    prepared, _ = demo_prepared
    result = select_samples(prepared, SelectionConfig())
    assert not prepared.zeroshot_available
    assert any("no text tower" in note for note in prepared.notes)
    assert result.metrics["precision"] >= 0.95
    assert result.metrics["auroc"] >= 0.95
    assert len(result.table) == len(prepared.dataset) == 1797
    assert result.table["zs_loss_score"].isna().all()
    assert list(result.per_class["class_name"]) == list(prepared.dataset.class_names)


def test_auroc_is_that_of_the_label_score_whatever_the_thresholds(demo_prepared):
    from sklearn.metrics import roc_auc_score

    prepared, _ = demo_prepared
    for theta in (0.3, 0.9):
        result = select_samples(prepared, SelectionConfig(theta_cons=theta))
        wrong = result.table["given_label"] != result.table["true_label"]
        expected = roc_auc_score(wrong, 1.0 - result.table["label_score"])
        assert result.metrics["auroc"] == pytest.approx(expected)
    only_loss = select_samples(prepared, SelectionConfig(use_lr_consistency=False))
    wrong = only_loss.table["given_label"] != only_loss.table["true_label"]
    assert only_loss.metrics["auroc"] == pytest.approx(roc_auc_score(wrong, 1.0 - only_loss.table["label_score"]))


def test_raising_theta_cons_never_grows_the_clean_set(demo_prepared):
    prepared, _ = demo_prepared
    kept = [int(select_samples(prepared, SelectionConfig(theta_cons=t, refill=False)).metrics["kept"])
            for t in (0.0, 0.5, 0.8, 0.95, 1.0)]
    assert kept == sorted(kept, reverse=True)
    assert kept[0] > kept[-1]


def test_second_prepare_reuses_embedding_and_fit(demo_prepared, monkeypatch):
    prepared, cache = demo_prepared
    import clipcleaner_core.pipeline as pipeline

    def no_refit(*args, **kwargs):
        raise AssertionError("the fit should come from the cache")

    monkeypatch.setattr(pipeline, "fit_scores", no_refit)
    again = prepare(load_dataset("demo"), EncoderSpec(model="pixels"), cache_root=cache)
    assert again.embedding.meta["reused"]
    assert again.fit_key == prepared.fit_key
    np.testing.assert_allclose(again.fit.lr_consistency, prepared.fit.lr_consistency)


def test_changed_labels_change_the_fit_key(demo_prepared):
    prepared, cache = demo_prepared
    labels = prepared.dataset.labels.copy()
    labels[0] = (labels[0] + 1) % 10
    changed = prepare(prepared.dataset.replace(labels=labels), EncoderSpec(model="pixels"), cache_root=cache)
    assert changed.embedding.key == prepared.embedding.key  # images unchanged: embeddings reused
    assert changed.fit_key != prepared.fit_key


def test_review_decisions_override_the_selection(demo_prepared):
    prepared, _ = demo_prepared
    import pandas as pd

    base = select_samples(prepared, SelectionConfig())
    flagged = int(base.table.loc[~base.table["is_clean"], "index"].iloc[0])
    decisions = pd.DataFrame({"index": [flagged], "decision": ["relabel"], "final_label": [3]})
    reviewed = select_samples(prepared, SelectionConfig(), decisions=decisions)
    row = reviewed.table.set_index("index").loc[flagged]
    assert row["final_label"] == 3 and row["review_decision"] == "relabel" and row["is_clean"]


def test_tiny_clip_enables_zero_shot_scores(tmp_path):
    name, weights = make_tiny_clip(tmp_path / "model")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(60, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 20)
    dataset = Dataset(name="toy", kind="demo", root=tmp_path, class_names=("cat", "dog", "ship"),
                      labels=labels, paths=[f"toy/{i}" for i in range(60)], images=images)
    prepared = prepare(dataset, EncoderSpec(model=name, pretrained=str(weights)),
                       scoring=ScoringConfig(probe="cross-val", n_folds=3), cache_root=tmp_path / "cache")
    assert prepared.zeroshot_available
    assert prepared.text_features.shape[1] == prepared.features.shape[1] == 32
    assert set(np.unique(prepared.text_labels)) == {0, 1, 2}
    result = select_samples(prepared, SelectionConfig())
    table = result.table
    assert table["zs_loss_score"].between(0, 1).all() and table["zs_consistency"].between(0, 1).all()
    off = select_samples(prepared, dataclasses.replace(SelectionConfig(), use_zs_loss=False,
                                                       use_zs_consistency=False, refill=False))
    on = select_samples(prepared, dataclasses.replace(SelectionConfig(), refill=False))
    assert off.metrics["kept"] >= on.metrics["kept"]  # fewer scores to pass: never fewer kept
