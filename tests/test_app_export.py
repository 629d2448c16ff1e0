"""Export page: every format downloads or writes, decisions applied, paths limited to data roots."""
import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/5_export.py"


@pytest.fixture()
def at(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    app = AppTest.from_file(APP, default_timeout=180).switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def write(at, fmt, target):
    at.radio(key="export_format").set_value(fmt).run()
    at.text_input(key="export_target").input(str(target))
    submit = next(b for b in at.button if b.label == "Write")
    submit.click().run()
    assert not at.exception, at.exception
    return at


def test_page_summarises_the_selection(at):
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["Samples", "Kept (clean)", "Flagged", "Reviewed by hand"]
    assert next(m.value for m in at.metric if m.label == "Samples") == "1,797"


def test_csv_written_to_a_folder_reads_back(at, tmp_path):
    write(at, "csv", tmp_path / "out" / "scores.csv")
    table = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(table) == 1797 and {"label_score", "is_label_issue", "final_label"} <= set(table.columns)
    assert (tmp_path / "out" / "scores.csv.json").exists()
    assert any("scores.csv" in s.value for s in at.success)


def test_kept_only_manifest_and_recipe(at, tmp_path):
    kept = int(next(m.value for m in at.metric if m.label == "Kept (clean)").replace(",", ""))
    write(at, "manifest", tmp_path / "clean.csv")
    manifest = pd.read_csv(tmp_path / "clean.csv")
    assert list(manifest.columns)[:2] == ["path", "label"] and len(manifest) == kept
    write(at, "recipe", tmp_path / "recipe.json")
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    assert "pixels" in json.dumps(recipe)


def test_imagefolder_tree_of_kept_images(at, tmp_path):
    write(at, "imagefolder", tmp_path / "tree")
    files = list((tmp_path / "tree").rglob("*.png"))
    kept = int(next(m.value for m in at.metric if m.label == "Kept (clean)").replace(",", ""))
    assert len(files) == kept and len({f.parent.name for f in files}) == 10


def test_path_outside_data_roots_is_refused(at, tmp_path):
    write(at, "csv", "/etc/clipcleaner-scores.csv")
    assert any("CLIPCLEANER_DATA_ROOTS" in e.value for e in at.error)
    assert not Path("/etc/clipcleaner-scores.csv").exists()


def test_download_button_offers_the_table(at):
    at.radio(key="export_format").set_value("parquet").run()
    button = at.get("download_button")[0]
    assert "parquet" in button.proto.label.lower()
