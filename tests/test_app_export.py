"""Export page: every format downloads or writes, decisions applied, paths limited to data roots."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from app_helpers import open_app, run_until_ready
from ui.state import ActiveSettings

PAGE = "pages/5_export.py"


@pytest.fixture()
def at(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the home folder is a default data root
    monkeypatch.delenv("CLIPCLEANER_DATA_ROOTS", raising=False)
    return open_app(PAGE)


def write(at, fmt, target=None, *, expect_ok=True):
    """Choose ``fmt``, type the target's folder and name (default: the suggested ones), press Write
    and wait for the export to finish."""
    at.radio(key="export_format").set_value(fmt).run()
    if target is not None:
        at.text_input(key="export_folder").input(str(Path(target).parent))
        at.text_input(key=f"export_name_{fmt}").input(Path(target).name)
    at.button(key="export_write").click().run()
    finish(at)
    if expect_ok:
        assert not at.error, [e.value for e in at.error]
    return at


def finish(at):
    task = at.session_state["export_task"] if "export_task" in at.session_state else None
    if task is not None:
        task.wait(120)
        at.run()
    assert not at.exception, at.exception


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


def test_recipe_records_the_settings(at, tmp_path):
    from clipcleaner_core.selection import SelectionConfig

    assert SelectionConfig().theta_cons != 0.65  # a non-default threshold, so the recipe must carry it
    at.session_state["clipcleaner_active"] = ActiveSettings(selection=SelectionConfig(theta_cons=0.65))
    at.run()
    assert not at.exception, at.exception
    kept = int(next(m.value for m in at.metric if m.label == "Kept (clean)").replace(",", ""))
    write(at, "recipe", tmp_path / "recipe.json")
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    assert "pixels" in json.dumps(recipe)
    assert recipe["format"] == "clipcleaner-recipe" and recipe["version"] == 1
    settings = recipe["settings"]
    assert settings["encoder"]["model"] == "pixels" and settings["encoder"]["pretrained"] is None
    assert settings["selection"]["theta_cons"] == pytest.approx(0.65)
    assert settings["selection"]["theta_gmm"] == pytest.approx(SelectionConfig().theta_gmm)
    assert settings["dataset"]["n"] == 1797 and settings["dataset"]["kind"] == "demo"
    assert recipe["dataset"]["n"] == 1797 and len(recipe["class_names"]) == 10
    assert recipe["dataset"]["fingerprint"] == settings["dataset"]["fingerprint"]
    table = recipe["table"]
    assert table["rows"] == 1797 and table["kept"] == kept and table["kept"] + table["flagged"] == 1797
    assert sum(table["kept_per_class"].values()) == kept and len(table["table_sha256"]) == 64


def test_manifest_needs_files_on_disk(at):
    at.radio(key="export_format").set_value("manifest").run()
    assert any("ImageFolder tree" in i.value for i in at.info)
    assert not at.get("download_button") and not at.error


def test_manifest_of_an_image_folder_lists_the_kept_files(at, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) // (2 if name == "cat" else 1)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{i}.png")
    at.session_state["clipcleaner_active"] = ActiveSettings(dataset_spec=str(tmp_path / "pets"))
    run_until_ready(at)
    kept = int(next(m.value for m in at.metric if m.label == "Kept (clean)").replace(",", ""))
    write(at, "manifest", tmp_path / "out" / "clean.csv")
    manifest = pd.read_csv(tmp_path / "out" / "clean.csv")
    assert list(manifest.columns)[:2] == ["path", "label"] and len(manifest) == kept
    assert (tmp_path / "out" / manifest["path"][0]).resolve().is_file()


def test_imagefolder_tree_of_kept_images(at, tmp_path):
    write(at, "imagefolder", tmp_path / "tree")
    files = list((tmp_path / "tree").rglob("*.png"))
    kept = int(next(m.value for m in at.metric if m.label == "Kept (clean)").replace(",", ""))
    assert len(files) == kept and len({f.parent.name for f in files}) == 10


def test_folder_outside_data_roots_is_refused_naming_the_control(at, tmp_path):
    write(at, "csv", "/etc/clipcleaner-scores.csv", expect_ok=False)
    assert any("“Export folder”" in e.value and "Dataset page" in e.value for e in at.error)
    assert not Path("/etc/clipcleaner-scores.csv").exists()


def test_a_file_this_app_did_not_write_is_never_replaced(at, tmp_path):
    bashrc = tmp_path / ".bashrc"
    bashrc.write_text("export PATH=$PATH\n")
    at.radio(key="export_format").set_value("csv").run()
    at.text_input(key="export_folder").input(str(tmp_path))
    at.text_input(key="export_name_csv").input(".bashrc")
    at.button(key="export_write").click().run()
    assert any("“File name”" in e.value and ".csv" in e.value for e in at.error)  # wrong extension
    write(at, "recipe", tmp_path / "notes.json", expect_ok=True)  # an app-written file is fine
    (tmp_path / "mine.json").write_text("{}")
    write(at, "recipe", tmp_path / "mine.json", expect_ok=False)
    assert any("was not written by this app" in e.value and "“File name”" in e.value for e in at.error)
    assert (tmp_path / "mine.json").read_text() == "{}" and bashrc.read_text() == "export PATH=$PATH\n"
    assert not any("overwrite=" in e.value or "--" in e.value for e in at.error)


def test_the_suggested_name_follows_the_format(at):
    at.radio(key="export_format").set_value("csv").run()
    assert at.text_input(key="export_name_csv").value == "demo-csv.csv"
    at.radio(key="export_format").set_value("recipe").run()
    assert at.text_input(key="export_name_recipe").value == "demo-recipe.json"
    assert at.text_input(key="export_folder").value.endswith("exports")


def test_exporting_twice_in_two_formats_keeps_both_files(at):
    from clipcleaner_core.paths import exports_dir

    write(at, "csv")
    write(at, "recipe")
    assert (exports_dir() / "demo-csv.csv").is_file() and (exports_dir() / "demo-recipe.json").is_file()
    assert len(pd.read_csv(exports_dir() / "demo-csv.csv")) == 1797


def test_replacing_an_earlier_export_asks_first(at, tmp_path):
    target = tmp_path / "labels.csv"
    write(at, "csv", target)
    first = target.stat().st_mtime_ns
    at.button(key="export_write").click().run()
    assert any("already exists" in w.value and "Replace it?" in w.value for w in at.warning)
    assert target.stat().st_mtime_ns == first  # nothing written before the answer
    at.button(key="export_keep_both").click().run()
    assert at.text_input(key="export_name_csv").value == "labels-2.csv"
    at.text_input(key="export_name_csv").input("labels.csv").run()
    at.button(key="export_write").click().run()
    at.button(key="export_confirm_replace").click().run()
    finish(at)
    assert target.stat().st_mtime_ns != first and any("labels.csv" in s.value for s in at.success)


def test_download_button_offers_the_table(at):
    at.radio(key="export_format").set_value("parquet").run()
    button = at.get("download_button")[0]
    assert "parquet" in button.proto.label.lower()


def test_review_decisions_are_applied_to_the_export(at, tmp_path):
    from clipcleaner_core.data import load_dataset
    from clipcleaner_core.store import Catalogue

    catalogue, fingerprint = Catalogue(), load_dataset("demo").fingerprint()
    catalogue.record_decisions(fingerprint, [(3, "relabel", 7), (5, "drop", None)])
    try:
        at.run()
        assert next(m.value for m in at.metric if m.label == "Reviewed by hand") == "2"
        write(at, "csv", tmp_path / "reviewed.csv")
        table = pd.read_csv(tmp_path / "reviewed.csv").set_index("index")
        assert table.loc[3, "review_decision"] == "relabel" and table.loc[3, "final_label"] == 7
        assert table.loc[5, "review_decision"] == "drop" and not table.loc[5, "is_clean"]
    finally:
        catalogue.undo_last(fingerprint)
