"""The paper's datasets load from their public layouts, are auto-detected, and name bad lines."""
import numpy as np
import pytest

import paper_layouts
from clipcleaner_core.data import apply_noise, load_dataset
from clipcleaner_core.data.clothing1m import balanced_subsample, clean_labels_of, load_clothing1m
from clipcleaner_core.data.idn_files import check_clean_labels, read_label_pair_csv
from clipcleaner_core.data.noise import NoiseSpec
from clipcleaner_core.data.red_mini_imagenet import RED_MINI_IMAGENET_CLASSES, red_noisy_mask
from clipcleaner_core.data.sources import detect_format
from clipcleaner_core.data.webvision import WEBVISION_CLASSES, find_imagenet_val, load_imagenet_val
from clipcleaner_core.errors import DataError


def test_animal10n_labels_come_from_file_names(tmp_path):
    root = paper_layouts.animal10n(tmp_path / "ANIMAL-10N")
    assert detect_format(root) == "animal10n"
    train, test = load_dataset(root), load_dataset(root, split="test")
    assert (train.kind, len(train), len(test), train.num_classes) == ("animal10n", 30, 20, 10)
    assert train.class_names[:3] == ("cat", "lynx", "wolf") and train.true_labels is None
    for path, label in zip(train.paths, train.labels):
        assert int(path.split("_")[0]) == label and train.abspath(train.paths.index(path)).is_file()
    assert load_dataset(root, format="animal10n").fingerprint() == train.fingerprint()


def test_animal10n_malformed_file_name_is_named(tmp_path):
    root = paper_layouts.animal10n(tmp_path / "a")
    paper_layouts.write_image(root / "training" / "12_00001.jpg", 0)
    with pytest.raises(DataError, match=r"12_00001\.jpg.*0\.\.9"):
        load_dataset(root)


def test_red_mini_imagenet_ratio_is_chosen_by_the_list(tmp_path):
    root = paper_layouts.red_mini_imagenet(tmp_path / "mini-imagenet")
    noisy_list = root / "split" / "red_noise_nl_0.4"
    assert detect_format(noisy_list) == "red-mini-imagenet" and detect_format(root) == "red-mini-imagenet"
    train = load_dataset(noisy_list)
    test = load_dataset(noisy_list, split="test")
    assert (train.kind, len(train), len(test), train.num_classes) == ("red-mini-imagenet", 200, 100, 100)
    assert train.class_names == RED_MINI_IMAGENET_CLASSES and train.paths[0].startswith("all_images/")
    assert test.paths[0].startswith("all_validation/") and test.abspath(0).is_file()
    assert train.noise["rate"] == 0.4 and train.spec == str(noisy_list)
    clean = load_dataset(root / "split" / "red_noise_nl_0.0")
    assert (clean.labels != train.labels).any() and train.fingerprint() != clean.fingerprint()
    with pytest.raises(DataError, match="red_noise_nl_0.4"):  # the root alone: say which lists exist
        load_dataset(root)


def test_blue_noise_knows_the_truth_and_red_knows_which_are_noisy(tmp_path):
    root = paper_layouts.red_mini_imagenet(tmp_path / "m")
    blue = load_dataset(root / "split" / "blue_noise_nl_0.4")
    assert blue.true_labels is not None and 0.2 < blue.is_noisy.mean() < 0.5
    red = load_dataset(root / "split" / "red_noise_nl_0.4")
    assert red_noisy_mask(red) is None  # no annotation file
    stem = red.paths[5].split("/")[1].split(".")[0]
    (root / "mini-imagenet-annotations.json").write_text(
        '{"data": [[{"image/id": "%s", "image/class/label/is_clean": 0}]]}' % stem)
    mask = red_noisy_mask(red)
    assert mask.sum() == 1 and mask[5]


def test_red_mini_imagenet_malformed_line_is_named(tmp_path):
    root = paper_layouts.red_mini_imagenet(tmp_path / "m")
    listed = root / "split" / "red_noise_nl_0.4"
    lines = listed.read_text().splitlines()
    lines[6] = "n0000000300000000.jpg three"
    listed.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"red_noise_nl_0\.4 line 7"):
        load_dataset(listed)
    lines[6] = "n0000000300000000.jpg 100"
    listed.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 7: label 100 is outside 0\.\.99"):
        load_dataset(listed)


def test_mini_webvision_keeps_the_first_50_classes_and_has_imagenet_val(tmp_path):
    root = paper_layouts.webvision(tmp_path / "WebVision")
    assert detect_format(root) == "webvision"
    train, val = load_dataset(root), load_dataset(root, split="test")
    assert (train.kind, train.num_classes, len(train), len(val)) == ("webvision", 50, 100, 50)
    assert train.labels.max() == 49 and train.class_names == WEBVISION_CLASSES
    assert train.paths[0] == "google/q0001/000000.jpg" and val.paths[0] == "val_images_256/val000000.jpg"
    assert train.abspath(0).is_file() and val.abspath(0).is_file()
    imagenet = load_imagenet_val(find_imagenet_val(root))
    assert len(imagenet) == 50 and imagenet.labels[0] == 0 and imagenet.class_names == WEBVISION_CLASSES
    (root / "imagenet_val" / "n01443537").rename(root / "imagenet_val" / "elsewhere")
    with pytest.raises(DataError, match="n01443537.*goldfish"):
        load_imagenet_val(root / "imagenet_val")


def test_mini_webvision_malformed_line_is_named(tmp_path):
    root = paper_layouts.webvision(tmp_path / "w")
    listed = root / "info" / "train_filelist_google.txt"
    listed.write_text(listed.read_text() + "google/q0002/broken.jpg\n")
    with pytest.raises(DataError, match=r"train_filelist_google\.txt line 105"):
        load_dataset(root)


def test_clothing1m_reads_only_the_lists(tmp_path, monkeypatch):
    root = paper_layouts.clothing1m(tmp_path / "clothing1M")
    assert detect_format(root) == "clothing1m"
    import os

    real_stat, stats = os.stat, []

    def counting_stat(path, *args, **kwargs):
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)

    train = load_dataset(root)
    monkeypatch.setattr(os, "stat", counting_stat)
    fingerprint = train.fingerprint()
    monkeypatch.undo()
    assert not any("/images/" in s for s in stats), "no image may be stat'ed for the fingerprint"
    assert (train.kind, len(train), train.num_classes) == ("clothing1m", 42, 14)
    assert train.class_names[8] == "Down Coat" and train.abspath(0).is_file()
    test = load_dataset(root, split="test")
    assert len(test) == 14 and all("/99/t" in p for p in test.paths)
    assert len(load_clothing1m(root, split="val")) == 14
    (root / "noisy_label_kv.txt").write_text((root / "noisy_label_kv.txt").read_text() + "images/x.jpg 1\n")
    assert load_dataset(root).fingerprint() != fingerprint  # the list files name the content


def test_clothing1m_malformed_and_unlabelled_keys_are_named(tmp_path):
    root = paper_layouts.clothing1m(tmp_path / "c")
    keys = root / "noisy_train_key_list.txt"
    keys.write_text(keys.read_text() + "images/new/unknown.jpg\n")
    with pytest.raises(DataError, match=r"noisy_train_key_list\.txt line 43: .*no label in noisy_label_kv"):
        load_dataset(root)
    kv = root / "noisy_label_kv.txt"
    kv.write_text("images/a.jpg 3 extra\n" + kv.read_text())
    with pytest.raises(DataError, match=r"noisy_label_kv\.txt line 1"):
        load_dataset(root)


def test_clothing1m_balanced_subsample_matches_the_papers_rule():
    rng = np.random.default_rng(0)
    labels = rng.choice(14, size=5000, p=np.r_[0.4, np.full(13, 0.6 / 13)])
    rows = balanced_subsample(labels, 700, num_classes=14, seed=3)
    counts = np.bincount(labels[rows], minlength=14)
    assert len(rows) == 700 and counts.max() == 50 and counts.min() == 50
    np.testing.assert_array_equal(rows, balanced_subsample(labels, 700, num_classes=14, seed=3))
    small = balanced_subsample(labels, 100, num_classes=14, seed=1)  # 100/14: at most 8 per class
    assert len(small) == 100 and np.bincount(labels[small]).max() <= 8


def test_clothing1m_subsample_loads_a_balanced_subset(tmp_path):
    root = paper_layouts.clothing1m(tmp_path / "c")
    subset = load_clothing1m(root, subsample=28, seed=0)
    assert len(subset) == 28 and np.bincount(subset.labels, minlength=14).tolist() == [2] * 14


def test_cifar10_idn_file_checks_the_clean_labels(tmp_path):
    root = paper_layouts.cifar10(tmp_path / "cifar")
    dataset = load_dataset(root)
    noisy = (dataset.labels + (np.arange(len(dataset)) % 3 == 0)) % 10
    good = paper_layouts.cifar10_idn_csv(tmp_path / "dependent0.4.csv", dataset.labels, noisy)
    clean, read_noisy = read_label_pair_csv(good)
    np.testing.assert_array_equal(read_noisy, noisy)
    check_clean_labels(good, clean, dataset.labels)
    noisy_dataset = apply_noise(dataset, NoiseSpec("file", path=str(good)))
    np.testing.assert_array_equal(noisy_dataset.labels, noisy)
    np.testing.assert_array_equal(noisy_dataset.true_labels, dataset.labels)

    wrong = dataset.labels.copy()
    wrong[4] = (wrong[4] + 1) % 10
    bad = paper_layouts.cifar10_idn_csv(tmp_path / "other.csv", wrong, noisy)
    with pytest.raises(DataError, match="line 6: label"):
        check_clean_labels(bad, read_label_pair_csv(bad)[0], dataset.labels)
    with pytest.raises(DataError, match="another dataset or order"):
        apply_noise(dataset, NoiseSpec("file", path=str(bad)))


def test_cifar10_idn_malformed_line_is_named(tmp_path):
    path = tmp_path / "dependent0.1.csv"
    path.write_text("label,label_noisy\n1,2\n3;4\n")
    with pytest.raises(DataError, match=r"dependent0\.1\.csv line 3"):
        read_label_pair_csv(path)


def test_clothing1m_hand_checked_training_images_give_partial_truth(tmp_path):
    root = paper_layouts.clothing1m(tmp_path / "c")
    train = load_dataset(root)
    assert len(clean_labels_of(train)[0]) == 0  # only test / val images are checked
    with open(root / "clean_label_kv.txt", "a") as kv:
        kv.write(f"{train.paths[5]} 13\n{train.paths[2]} {train.labels[2]}\n")
    rows, labels = clean_labels_of(train)
    assert rows.tolist() == [2, 5] and labels.tolist() == [train.labels[2], 13]
