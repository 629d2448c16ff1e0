"""Manifest labels, decided on purpose (README "Labels"): integer spellings are one class; missing,
non-integer and conflicting labels are refused naming the rows; exact repeats are used once."""
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core.data import load_manifest
from clipcleaner_core.errors import DataError


def _images(root: Path, names) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, format="PNG")
    for name in names:
        (root / name).write_bytes(buffer.getvalue())


def _manifest(root: Path, rows: list[tuple[str, str]], header="path,label") -> Path:
    _images(root, {path for path, *_ in rows})
    lines = [header] + [",".join(row) for row in rows]
    (root / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "m.csv"


def test_integer_spellings_are_one_class(tmp_path):
    manifest = _manifest(tmp_path, [("a.png", "1"), ("b.png", "01"), ("c.png", "1.0"),
                                    ("d.png", '" 1"'), ("e.png", "0"), ("f.png", "+1")])
    dataset = load_manifest(manifest)
    assert dataset.class_names == ("0", "1")
    assert dataset.labels.tolist() == [1, 1, 1, 1, 0, 1]


def test_integer_spellings_mixed_with_names_are_still_one_class(tmp_path):
    manifest = _manifest(tmp_path, [("a.png", "1"), ("b.png", "01"), ("c.png", "1.0"), ("d.png", "cat")])
    dataset = load_manifest(manifest)
    assert dataset.class_names == ("1", "cat") and dataset.labels.tolist() == [0, 0, 0, 1]


def test_class_names_keep_working_and_class_file_names_match_as_written(tmp_path):
    (tmp_path / "classes.txt").write_text("01\ncat\n")
    manifest = _manifest(tmp_path, [("a.png", "01"), ("b.png", "cat"), ("c.png", "1")])
    assert load_manifest(manifest).labels.tolist() == [0, 1, 1]  # "1" is the class id 1


@pytest.mark.parametrize("bad", ["NaN", "None", "nan", "null", '""', "NA"])
def test_missing_labels_are_refused_naming_the_rows(tmp_path, bad):
    manifest = _manifest(tmp_path, [("a.png", "cat"), ("b.png", bad), ("c.png", "dog"), ("d.png", bad)])
    with pytest.raises(DataError, match=r"missing label .*m.csv: rows 2, 4; fill them in"):
        load_manifest(manifest)


def test_non_integer_numeric_labels_are_refused_naming_the_rows(tmp_path):
    manifest = _manifest(tmp_path, [("a.png", "0"), ("b.png", "0.5"), ("c.png", "1")])
    with pytest.raises(DataError, match=r"not a whole number in m.csv: row 2 \('0.5'\)"):
        load_manifest(manifest)


def test_parquet_float_labels_with_nan_are_refused(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [1.0, np.nan]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"missing label .*row 2"):
        load_manifest(tmp_path / "m.parquet")
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [1.0, 0.0]}).to_parquet(tmp_path / "m.parquet")
    assert load_manifest(tmp_path / "m.parquet").labels.tolist() == [1, 0]


def test_same_path_with_two_labels_is_refused_naming_both_rows(tmp_path):
    manifest = _manifest(tmp_path, [("a.png", "cat"), ("b.png", "dog"), ("./a.png", "dog")])
    with pytest.raises(DataError, match=r"same image twice with different labels: 'a.png' in rows 1 and 3"):
        load_manifest(manifest)


def test_exact_repeats_are_used_once_and_listed(tmp_path):
    manifest = _manifest(tmp_path, [("a.png", "cat"), ("b.png", "dog"), ("a.png", "cat")])
    dataset = load_manifest(manifest)
    assert dataset.paths == ("a.png", "b.png")
    assert dataset.bad_files["path"].tolist() == ["a.png"]
    assert "row 3" in dataset.bad_files["reason"].iloc[0] and "row 1" in dataset.bad_files["reason"].iloc[0]


def test_conflicting_true_labels_are_refused(tmp_path):
    manifest = _manifest(tmp_path, [("a.png", "cat", "cat"), ("a.png", "cat", "dog")],
                         header="path,label,true_label")
    with pytest.raises(DataError, match="different labels"):
        load_manifest(manifest)


def test_a_manifest_that_is_not_utf8_names_the_line(tmp_path):
    _images(tmp_path, ["a.png"])
    (tmp_path / "m.csv").write_bytes(b"path,label\na.png,cat\ncaf\xe9.png,dog\n")
    with pytest.raises(DataError, match=r"not UTF-8: line 3 \('caf\\\\xe9.png,dog'\) has the byte 0xe9"):
        load_manifest(tmp_path / "m.csv")
