"""Score tables read back strictly (no silent truncation or guessing), manifests exported from the
command line point at the dataset's images, and exports never replace the dataset's manifest."""
import io
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core.cli import main
from clipcleaner_core.data import load_manifest
from clipcleaner_core.errors import DataError
from clipcleaner_core.export import export, read_table


def _scores(tmp_path: Path, **columns) -> Path:
    table = pd.DataFrame({"index": [0, 1, 2], "path": ["a", "b", "c"], "given_label": [0, 1, 0],
                          "final_label": [0, 1, 0], "is_clean": ["true", "false", "true"], **columns})
    table.to_csv(tmp_path / "s.csv", index=False)
    return tmp_path / "s.csv"


def test_a_fractional_label_in_a_score_table_is_refused_not_truncated(tmp_path):
    with pytest.raises(DataError, match=r"final_label.*not a whole number at row 1 \(1.5\)"):
        read_table(_scores(tmp_path, final_label=[0, 1.5, 0]))


def test_an_unknown_boolean_spelling_is_refused_not_read_as_false(tmp_path):
    with pytest.raises(DataError, match=r"is_clean must be true or false, not row 1 \('maybe'\)"):
        read_table(_scores(tmp_path, is_clean=["yes", "maybe", "no"]))
    assert read_table(_scores(tmp_path, is_clean=["Y", "n", "TRUE"]))["is_clean"].tolist() == [True, False, True]


def _manifest_dataset(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 10, 10)).save(buffer, format="PNG")
    rows = []
    for i in range(8):
        (root / "img" / f"{i}.png").write_bytes(buffer.getvalue())
        rows.append(f"img/{i}.png,{'cat' if i % 2 else 'dog'}")
    (root / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return root / "m.csv"


def test_cli_manifest_export_elsewhere_points_at_the_dataset_images(tmp_path, capsys):
    manifest = _manifest_dataset(tmp_path / "data")
    assert main(["run", "--data", str(manifest), "--model", "pixels", "--out", str(tmp_path / "s.csv")]) == 0
    out = tmp_path / "exports" / "clean.csv"
    assert main(["export", "--scores", str(tmp_path / "s.csv"), "--format", "manifest", "--out", str(out)]) == 0
    exported = pd.read_csv(out)
    images = {p.resolve() for p in (tmp_path / "data" / "img").iterdir()}
    assert len(exported) and {(out.parent / p).resolve() for p in exported["path"]} <= images


def test_an_export_over_a_hard_link_to_the_dataset_manifest_is_refused(tmp_path):
    manifest = _manifest_dataset(tmp_path / "data")
    dataset = load_manifest(manifest)
    os.link(manifest, tmp_path / "linked.csv")
    table = pd.DataFrame({"index": range(len(dataset)), "path": list(dataset.paths),
                          "final_label": dataset.labels, "is_clean": True})
    before = manifest.read_bytes()
    with pytest.raises(DataError, match="replace the dataset's own files"):
        export(table, "manifest", tmp_path / "linked.csv", dataset=dataset)
    assert manifest.read_bytes() == before
