"""Dataset sources: each format loads, bad input is refused with a message naming the row or file."""
import io
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipcleaner_core.data import detect_format, load_cifar, load_dataset, load_imagefolder, load_manifest
from clipcleaner_core.errors import ConfigError, DataError
from clipcleaner_core.validation import integer_label, is_missing_label, is_non_integer_number


def _png(color=(10, 20, 30), size=(6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def _write(path: Path, data: bytes = PNG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree(root: Path, spec: dict) -> Path:
    for rel, data in spec.items():
        _write(root / rel, data)
    return root


# --- ImageFolder -------------------------------------------------------------------------------

def test_imagefolder_loads_classes_in_sorted_order_with_case_insensitive_extensions(tmp_path):
    _tree(tmp_path, {"dog/a.PNG": PNG, "dog/sub/b.png": PNG, "cat/c.Png": PNG, "cat/notes.txt": b"x",
                     "cat/.hidden.png": PNG, ".git/x.png": PNG, "bird/d.jpg": _jpeg()})
    dataset = load_dataset(tmp_path)
    assert dataset.kind == "imagefolder" and dataset.class_names == ("bird", "cat", "dog")
    assert sorted(zip(dataset.paths, dataset.labels.tolist())) == [
        ("bird/d.jpg", 0), ("cat/c.Png", 1), ("dog/a.PNG", 2), ("dog/sub/b.png", 2)]
    assert dataset.abspath(0).is_file()
    # passed over, with a reason; a hidden folder beside the class folders is not a class
    assert sorted(dataset.bad_files["path"]) == ["cat/.hidden.png", "cat/notes.txt"]


def test_bad_images_land_in_bad_files_and_do_not_stop_loading(tmp_path):
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(noisy, "PNG")
    _tree(tmp_path, {"a/good.png": PNG, "a/empty.png": b"", "a/garbage.jpg": b"not an image",
                     "b/cut.png": noisy.getvalue()[:1500], "b/good.png": PNG})
    dataset = load_imagefolder(tmp_path)
    assert sorted(dataset.paths) == ["a/good.png", "b/good.png"]
    reasons = dict(zip(dataset.bad_files["path"], dataset.bad_files["reason"]))
    assert set(reasons) == {"a/empty.png", "a/garbage.jpg", "b/cut.png"}
    assert "empty" in reasons["a/empty.png"] and "truncated" in reasons["b/cut.png"]


def test_imagefolder_errors_name_the_folder_and_fix(tmp_path):
    _write(tmp_path / "loose.png")
    with pytest.raises(DataError, match="no class subfolders"):
        load_imagefolder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="empty dataset"):
        load_imagefolder(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")


def test_imagefolder_with_split_subfolders(tmp_path):
    _tree(tmp_path, {"train/cat/1.png": PNG, "train/dog/2.png": PNG, "val/cat/3.png": PNG})
    train = load_dataset(tmp_path)
    test = load_dataset(tmp_path, split="test")
    assert len(train) == 2 and train.class_names == ("cat", "dog")
    assert len(test) == 1 and test.split == "test" and test.paths == ("cat/3.png",)


# --- Manifests ---------------------------------------------------------------------------------

def test_csv_manifest_with_names_true_labels_and_relative_paths(tmp_path):
    _tree(tmp_path, {"img/1.png": PNG, "img/2.png": PNG, "img/3.png": PNG})
    (tmp_path / "m.csv").write_text("path,label,true_label\nimg/1.png,dog,dog\n"
                                    "./img/2.png,cat,dog\n" + f"{tmp_path / 'img/3.png'},cat,cat\n")
    dataset = load_dataset(tmp_path / "m.csv")
    assert dataset.kind == "manifest" and dataset.class_names == ("cat", "dog")
    assert dataset.paths == ("img/1.png", "img/2.png", "img/3.png")
    assert dataset.labels.tolist() == [1, 0, 0] and dataset.true_labels.tolist() == [1, 1, 0]
    assert dataset.is_noisy.tolist() == [False, True, False]


def test_parquet_manifest_with_integer_labels_and_missing_file(tmp_path):
    _tree(tmp_path, {"a.png": PNG, "b.png": PNG})
    pd.DataFrame({"path": ["a.png", "b.png", "gone.png"], "label": [2, 0, 1]}).to_parquet(tmp_path / "m.parquet")
    dataset = load_manifest(tmp_path / "m.parquet")
    assert dataset.class_names == ("0", "1", "2") and dataset.labels.tolist() == [2, 0]
    assert dataset.bad_files.to_dict("records") == [{"path": "gone.png", "reason": "file not found"}]


def test_manifest_uses_classes_txt_beside_it(tmp_path):
    _tree(tmp_path, {"a.png": PNG, "b.png": PNG})
    (tmp_path / "classes.txt").write_text("zebra\napple\nmoose\n")
    (tmp_path / "m.csv").write_text("path,label\na.png,moose\nb.png,1\n")
    dataset = load_manifest(tmp_path / "m.csv")
    assert dataset.class_names == ("zebra", "apple", "moose") and dataset.labels.tolist() == [2, 1]
    (tmp_path / "bad.csv").write_text("path,label\na.png,moose\nb.png,apple\na.png,foo\n")
    with pytest.raises(DataError, match=r"unknown label 'foo' in row 3 of bad.csv \(line 4\).*classes.txt"):
        load_manifest(tmp_path / "bad.csv")


@pytest.mark.parametrize("row, message", [
    ("../outside.png,cat", r"path '../outside.png' in row 2 of m.csv .*outside the manifest's folder"),
    ("img/../../x.png,cat", r"row 2 .*outside"),
    (",cat", r"empty path in row 2"),
    ("a.png,", r"missing label .* m.csv: row 2"),
])
def test_bad_manifest_rows_are_refused_with_the_row_number(tmp_path, row, message):
    _write(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text(f"path,label\na.png,cat\n{row}\n")
    with pytest.raises(DataError, match=message):
        load_manifest(tmp_path / "m.csv")


def test_a_manifest_with_absolute_paths_elsewhere_loads(tmp_path):
    """What `export --format manifest` writes when the images lie outside the manifest's folder."""
    _tree(tmp_path / "data", {"cat/a.png": PNG, "dog/b.png": PNG})
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "m.csv").write_text(
        f"path,label\n{tmp_path / 'data/cat/a.png'},cat\n{tmp_path / 'data/dog/b.png'},dog\n")
    dataset = load_manifest(tmp_path / "exports" / "m.csv")
    assert Path(dataset.root) == tmp_path / "data"
    assert dataset.paths == ("cat/a.png", "dog/b.png") and dataset.labels.tolist() == [0, 1]
    assert dataset.bad_files.empty
    # mixed with a relative row: the root holds the manifest's folder too
    _write(tmp_path / "exports" / "c.png")
    (tmp_path / "exports" / "mixed.csv").write_text(
        f"path,label\n{tmp_path / 'data/cat/a.png'},cat\nc.png,dog\n")
    mixed = load_manifest(tmp_path / "exports" / "mixed.csv")
    assert Path(mixed.root) == tmp_path and mixed.paths == ("data/cat/a.png", "exports/c.png")
    # the class order comes from the classes.txt beside the manifest, not from the images' folder
    (tmp_path / "exports" / "classes.txt").write_text("dog\ncat\n")
    ordered = load_manifest(tmp_path / "exports" / "m.csv")
    assert ordered.class_names == ("dog", "cat") and ordered.labels.tolist() == [1, 0]


def test_manifest_file_level_errors(tmp_path):
    (tmp_path / "cols.csv").write_text("file,class\na.png,cat\n")
    with pytest.raises(DataError, match="lacks column.*path, label"):
        load_manifest(tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_manifest(tmp_path / "empty.csv")
    (tmp_path / "neg.csv").write_text("path,label\na.png,-1\n")
    with pytest.raises(DataError, match="negative label"):
        load_manifest(tmp_path / "neg.csv")


def test_manifest_split_column(tmp_path):
    _tree(tmp_path, {"a.png": PNG, "b.png": PNG, "c.png": PNG})
    (tmp_path / "m.csv").write_text("path,label,split\na.png,x,train\nb.png,y,test\nc.png,y,train\n")
    assert load_manifest(tmp_path / "m.csv").paths == ("a.png", "c.png")
    assert load_dataset(tmp_path / "m.csv", split="test").paths == ("b.png",)


# --- CIFAR -------------------------------------------------------------------------------------

def _fake_cifar(root: Path, variant: str, per_batch: int = 4) -> Path:
    rng = np.random.default_rng(0)

    def batch(n, key, k):
        return {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                key: rng.integers(0, k, n).tolist(), b"filenames": [b"x.png"] * n}

    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(per_batch, b"labels", 10) for i in range(1, 6)}
        files["test_batch"] = batch(per_batch, b"labels", 10)
        files["batches.meta"] = {b"label_names": [n.encode() for n in "abcdefghij"]}
    else:
        folder = root / "cifar-100-python"
        files = {"train": batch(per_batch * 5, b"fine_labels", 100),
                 "test": batch(per_batch, b"fine_labels", 100),
                 "meta": {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}}
    folder.mkdir(parents=True)
    for name, payload in files.items():
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    return folder


@pytest.mark.parametrize("variant, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_python_folders_load_both_splits(tmp_path, variant, classes):
    folder = _fake_cifar(tmp_path, variant)
    assert detect_format(folder) == variant and detect_format(tmp_path) == variant
    train = load_dataset(tmp_path)
    test = load_dataset(folder, split="test")
    assert train.kind == variant and train.num_classes == classes and len(train) == 20
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert len(test) == 4 and test.paths[0] == "test/00000"
    raw = pickle.loads((folder / ("test_batch" if variant == "cifar10" else "test")).read_bytes())
    np.testing.assert_array_equal(test.images[1], raw[b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_cifar_pickles_written_by_numpy_1_are_read(tmp_path):
    folder = _fake_cifar(tmp_path, "cifar10")
    for path in folder.iterdir():
        raw = path.read_bytes()
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in (folder / "test_batch").read_bytes()
    dataset = load_cifar(folder, split="test")
    assert dataset.class_names == tuple("abcdefghij") and len(dataset) == 4


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_pickle_carrying_code_is_refused(tmp_path):
    folder = _fake_cifar(tmp_path, "cifar10")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to load (posix|os)\.system"):
        load_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar(folder)


# --- Dispatch and fingerprints -----------------------------------------------------------------

def test_load_dataset_dispatch_and_format_override(tmp_path):
    _tree(tmp_path, {"cat/1.png": PNG})
    assert detect_format("demo") == "demo"
    with pytest.raises(ConfigError, match="unknown dataset format 'zip'.*imagefolder"):
        load_dataset(tmp_path, format="zip")
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset(tmp_path, split="dev")
    with pytest.raises(DataError, match="no batches.meta"):
        load_dataset(tmp_path, format="cifar10")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a manifest"):
        load_dataset(tmp_path / "notes.txt")


def test_fingerprint_changes_when_a_label_or_a_file_changes(tmp_path):
    _tree(tmp_path, {"a/1.png": PNG, "b/2.png": PNG})
    first = load_dataset(tmp_path)
    before, content_before = first.fingerprint(), first.content_fingerprint()
    assert load_dataset(tmp_path).fingerprint() == before
    relabelled = first.replace(labels=1 - first.labels)
    assert relabelled.fingerprint() != before
    assert relabelled.content_fingerprint() == content_before
    _write(tmp_path / "a/1.png", _png((200, 0, 0), (70, 70)))
    changed = load_dataset(tmp_path)
    assert changed.fingerprint() != before and changed.content_fingerprint() != content_before
    after_edit = changed.fingerprint()
    os.utime(tmp_path / "b/2.png", ns=(1_000_000_000, 1_000_000_000))  # same bytes, rewritten
    assert load_dataset(tmp_path).fingerprint() != after_edit


# --- Property tests ----------------------------------------------------------------------------

_LABEL = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).map(
    str.strip).filter(lambda s: s and integer_label(s) is None and not is_missing_label(s)
                      and not is_non_integer_number(s))  # names, not numbers (README "Labels")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=st.lists(_LABEL, min_size=1, max_size=6), parquet=st.booleans())
def test_manifest_round_trips_arbitrary_label_strings(labels, parquet):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = [f"img/{i}.PnG" for i in range(len(labels))]
        for rel in paths:
            _write(root / rel)
        table = pd.DataFrame({"path": paths, "label": labels})
        manifest = root / ("m.parquet" if parquet else "m.csv")
        table.to_parquet(manifest) if parquet else table.to_csv(manifest, index=False)
        dataset = load_manifest(manifest)
        assert dataset.class_names == tuple(sorted(set(labels)))
        assert [dataset.class_names[k] for k in dataset.labels] == labels
        assert list(dataset.paths) == paths


_EXT = st.sampled_from(["png", "PNG", "Png", "jpg", "JPG", "JpEg", "bmp", "TIFF"])
_CLASS = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=8)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classes=st.dictionaries(_CLASS, st.lists(_EXT, min_size=1, max_size=3), min_size=1, max_size=4))
def test_imagefolder_round_trips_classes_and_mixed_case_extensions(classes):
    assume(len({c.lower() for c in classes}) == len(classes))  # case-insensitive file systems
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = []
        for name, extensions in classes.items():
            for i, ext in enumerate(extensions):
                fmt = {"jpg": "JPEG", "jpeg": "JPEG", "tiff": "TIFF"}.get(ext.lower(), ext.upper())
                buffer = io.BytesIO()
                Image.new("RGB", (3, 3)).save(buffer, format=fmt)
                _write(root / name / f"{i}.{ext}", buffer.getvalue())
                expected.append((f"{name}/{i}.{ext}", name))
        dataset = load_imagefolder(root)
        assert dataset.class_names == tuple(sorted(classes))
        got = [(p, dataset.class_names[k]) for p, k in zip(dataset.paths, dataset.labels)]
        assert sorted(got) == sorted(expected) and dataset.bad_files.empty


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="JPEG")
    return buffer.getvalue()
