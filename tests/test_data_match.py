"""A score table is checked against the dataset it names before its rows are used by position."""
import io
import json
import os
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core.data import load_imagefolder
from clipcleaner_core.data.match import align_table
from clipcleaner_core.errors import DataError, DatasetMismatchError

COLOURS = {"blue": (20, 20, 220), "green": (20, 200, 20), "red": (220, 20, 20)}


def _png(colour, seed) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 12, (16, 16, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _imagefolder(root: Path, per_class=6) -> Path:
    for k, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{name}{i:02d}.png").write_bytes(_png(colour, 10 * k + i))
    return root


def _table(dataset) -> tuple[pd.DataFrame, dict]:
    n = len(dataset)
    table = pd.DataFrame({"index": np.arange(n), "path": list(dataset.paths),
                          "given_label": dataset.labels, "final_label": dataset.labels,
                          "is_clean": np.ones(n, dtype=bool)})
    recorded = {"fingerprint": dataset.fingerprint(), "n": n, "class_names": list(dataset.class_names)}
    return table, recorded


def test_an_unchanged_dataset_passes_as_is(tmp_path):
    dataset = load_imagefolder(_imagefolder(tmp_path / "data"))
    table, recorded = _table(dataset)
    assert align_table(table, dataset, recorded=recorded) is table


def test_an_added_file_is_named_and_matching_by_path_is_offered(tmp_path):
    root = _imagefolder(tmp_path / "data")
    table, recorded = _table(load_imagefolder(root))
    (root / "blue" / "blue00a.png").write_bytes(_png(COLOURS["blue"], 99))  # sorts into the middle
    dataset = load_imagefolder(root)
    with pytest.raises(DatasetMismatchError, match=r"1 file in the dataset but not in the table "
                       r"\(added since\): 'blue/blue00a.png'.*re-run.*match.*by file path"):
        align_table(table, dataset, recorded=recorded, source="scores.csv")
    matched = align_table(table, dataset, recorded=recorded, by_path=True)
    assert [dataset.paths[i] for i in matched["index"]] == table["path"].tolist()
    assert (dataset.labels[matched["index"]] == matched["given_label"]).all()


def test_removed_and_relabelled_files_are_named(tmp_path):
    root = _imagefolder(tmp_path / "data")
    table, recorded = _table(load_imagefolder(root))
    (root / "red" / "red03.png").unlink()
    os.replace(root / "blue" / "blue01.png", root / "green" / "blue01.png")
    message = str(pytest.raises(DatasetMismatchError, align_table, table, load_imagefolder(root),
                                recorded=recorded).value)
    assert "'red/red03.png'" in message and "removed" in message
    assert "'blue/blue01.png'" in message and "not possible" in message  # its path is gone too


def test_a_relabelled_manifest_row_is_reported_and_labels_follow_class_names(tmp_path):
    from clipcleaner_core.data import load_manifest

    root = _imagefolder(tmp_path / "data", per_class=2)
    rows = [f"{name}/{name}{i:02d}.png,{name}" for name in COLOURS for i in range(2)]
    (root / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    table, recorded = _table(load_manifest(root / "m.csv"))
    rows[0] = "blue/blue00.png,zebra"  # a new class that sorts last, and one relabelled file
    (root / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    dataset = load_manifest(root / "m.csv")
    with pytest.raises(DatasetMismatchError, match=r"relabelled in the dataset since: 'blue/blue00.png'"
                       r".*'zebra'.* are new"):
        align_table(table, dataset, recorded=recorded)
    matched = align_table(table, dataset, recorded=recorded, by_path=True)
    assert matched["final_label"].tolist() == table["final_label"].tolist()  # same names, same ids


def test_a_table_without_paths_is_checked_by_count_and_labels(tmp_path):
    dataset = load_imagefolder(_imagefolder(tmp_path / "data"))
    table = pd.DataFrame({"index": np.arange(len(dataset) + 2), "given_label": 0, "is_clean": True})
    with pytest.raises(DatasetMismatchError, match=r"index runs to 19 but the dataset has 18.*no paths"):
        align_table(table, dataset)


def _cli(capsys, *argv):
    """The command line's ``main`` run in this process (a process start per call cost ~6 s)."""
    from clipcleaner_core.cli import main

    code = main([str(a) for a in argv])
    return types.SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def test_export_stops_when_the_dataset_changed_and_matches_by_path_on_request(tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    root = _imagefolder(tmp_path / "data", per_class=4)
    proc = _cli(capsys, "run", "--data", root, "--model", "pixels", "--probe", "in-sample", "--out",
                tmp_path / "scores.csv")
    assert proc.returncode == 0, proc.stderr
    (root / "blue" / "blue00a.png").write_bytes(_png(COLOURS["red"], 7))  # one image added
    proc = _cli(capsys, "export", "--scores", tmp_path / "scores.csv", "--format", "imagefolder",
                "--out", tmp_path / "clean")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'blue/blue00a.png'" in proc.stderr and "--match-by-path" in proc.stderr, proc.stderr
    assert not (tmp_path / "clean").exists()
    proc = _cli(capsys, "export", "--scores", tmp_path / "scores.csv", "--format", "imagefolder",
                "--out", tmp_path / "clean", "--match-by-path")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "scores.csv")
    for path, label, keep in zip(table["path"], table["final_label"], table["is_clean"]):
        exported = tmp_path / "clean" / list(COLOURS)[label] / Path(path).name
        assert exported.exists() == bool(keep)
        if keep:
            assert exported.resolve() == (root / path).resolve()  # the same image, filed as decided
    meta = json.loads((tmp_path / "clean.json").read_text())
    assert meta["dataset"]["n"] == 13  # the sidecar describes the dataset as exported


def test_train_selection_is_checked_against_the_dataset(tmp_path):
    from clipcleaner_core.export import export
    from clipcleaner_core.train.config import TrainConfig
    from clipcleaner_core.train.data import load_train_data

    root = _imagefolder(tmp_path / "data")
    before = load_imagefolder(root)
    table, _ = _table(before)
    table["is_clean"] = table["path"].str.startswith("green")  # S0: the green images only
    export(table, "csv", tmp_path / "selection.csv", dataset=before)
    (root / "blue" / "blue02a.png").write_bytes(_png(COLOURS["green"], 5))  # later rows shift by one
    after = load_imagefolder(root)
    features = np.zeros((len(after), 4), dtype=np.float32)
    config = TrainConfig(data=str(root), selection=str(tmp_path / "selection.csv"), holdout=0.2)
    with pytest.raises(DatasetMismatchError, match=r"'blue/blue02a.png'.*--match-by-path"):
        load_train_data(config, dataset=after, features=features)
    data = load_train_data(config.replace(match_by_path=True), dataset=after, features=features)
    s0_paths = {after.paths[i] for i in data.index[data.s0_mask]}
    assert s0_paths and all(p.startswith("green/") for p in s0_paths)


def test_a_recipe_made_on_another_version_of_the_dataset_is_noted(tmp_path):
    from clipcleaner_core.train.data import recipe_note

    dataset = load_imagefolder(_imagefolder(tmp_path / "data"))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"dataset": {"fingerprint": dataset.fingerprint(), "n": len(dataset)},
                                  "settings": {"selection": {"theta_cons": 0.7}}}))
    assert recipe_note(recipe, dataset) is None
    (tmp_path / "data" / "red" / "red99.png").write_bytes(_png(COLOURS["red"], 3))
    note = recipe_note(recipe, load_imagefolder(tmp_path / "data"))
    assert "18 samples then, 19 now" in note and "applied to the dataset as it is now" in note
    recipe.write_text("{not json")
    with pytest.raises(DataError, match="cannot be read"):
        recipe_note(recipe, dataset)
