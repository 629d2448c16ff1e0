"""Precomputed embeddings: both folder layouts, bad inputs, and a fit straight from them."""
import numpy as np
import pandas as pd
import pytest

from clipcleaner_core.data import load_dataset
from clipcleaner_core.data.embeddings import open_embeddings
from clipcleaner_core.data.sources import detect_format
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.errors import DataError
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.pipeline import prepare, select_samples


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(300, 3, 16, noise_rate=0.3, spread=2.0, seed=3)


def _array_folder(root, problem, *, labels=None, text=True):
    root.mkdir()
    np.save(root / "features.npy", problem["features"].astype(np.float32))
    np.save(root / "labels.npy", problem["labels"] if labels is None else labels)
    np.save(root / "true_labels.npy", problem["true_labels"])
    (root / "class_names.txt").write_text("cat\ndog\nbird\n")
    if text:
        np.save(root / "text_features.npy", problem["text_features"])
        np.save(root / "text_labels.npy", problem["text_labels"])
    return root


def test_array_folder_scores_with_zero_shot_and_probe(tmp_path, problem):
    root = _array_folder(tmp_path / "emb", problem)
    assert detect_format(root) == "embeddings"
    dataset = load_dataset(root)
    assert dataset.kind == "embeddings" and dataset.class_names == ("cat", "dog", "bird")
    np.testing.assert_array_equal(dataset.labels, problem["labels"])
    prepared = prepare(dataset, EncoderSpec(model="pixels"), cache_root=tmp_path / "cache")
    assert prepared.fit.has_zeroshot and prepared.fit.has_probe
    assert isinstance(prepared.features, np.memmap)  # read in place, not copied
    result = select_samples(prepared)
    assert result.metrics["f1"] > 0.8
    assert not any((root / name).exists() for name in ("fits", "umap", "precomputed"))


def test_clip_retrieval_layout_with_string_labels_and_unnormalised_float16(tmp_path, problem):
    root = tmp_path / "cr"
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    names = np.array(["cat", "dog", "bird"])
    scaled = (problem["features"] * 3.0).astype(np.float16)
    for i, part in enumerate(np.array_split(np.arange(300), 3)):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", scaled[part])
        pd.DataFrame({"image_path": [f"img/{j}.jpg" for j in part],
                      "label": names[problem["labels"][part]]}).to_parquet(
            root / "metadata" / f"metadata_{i}.parquet")
    dataset = load_dataset(root)
    assert dataset.class_names == ("bird", "cat", "dog")  # sorted names
    assert dataset.paths[5] == "img/5.jpg"
    np.testing.assert_array_equal(np.asarray(dataset.class_names)[dataset.labels],
                                  names[problem["labels"]])
    opened = open_embeddings(dataset, cache_root=tmp_path / "cache")
    np.testing.assert_allclose(np.linalg.norm(opened.features, axis=1), 1.0, atol=1e-5)
    assert opened.text_features is None
    prepared = prepare(dataset, EncoderSpec(model="pixels"), cache_root=tmp_path / "cache")
    assert prepared.fit.has_probe and not prepared.fit.has_zeroshot
    assert any("text_features" in note for note in prepared.notes)


@pytest.mark.parametrize("breakage, match", [
    (lambda root: np.save(root / "labels.npy", np.zeros(299, dtype=int)), "299 labels"),
    (lambda root: (root / "labels.npy").unlink(), "no labels"),
    (lambda root: np.save(root / "text_labels.npy", np.zeros(2, dtype=int)), "text features"),
])
def test_broken_folders_name_the_file_and_fix(tmp_path, problem, breakage, match):
    root = _array_folder(tmp_path / "emb", problem)
    breakage(root)
    with pytest.raises(DataError, match=match):
        dataset = load_dataset(root)
        open_embeddings(dataset, cache_root=tmp_path / "cache")


def test_a_missing_label_in_the_metadata_is_refused_naming_the_row(tmp_path, problem):
    root = tmp_path / "emb"
    root.mkdir()
    np.save(root / "features.npy", problem["features"].astype(np.float32))
    labels = problem["labels"].astype(float)
    labels[7] = np.nan  # an integer column with one null reads back as floats
    pd.DataFrame({"label": labels}).to_parquet(root / "metadata.parquet")
    with pytest.raises(DataError, match=r"rows \[7\] have no label"):
        load_dataset(root)
    labels[7] = 1
    pd.DataFrame({"label": labels}).to_parquet(root / "metadata.parquet")
    assert load_dataset(root).class_names == ("class 0", "class 1", "class 2")
