"""Exports: tables read back equal, manifests reload, ImageFolder trees, recipes, and safety."""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core import export as export_module
from clipcleaner_core.atomic import read_sidecar
from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.data.manifest import load_manifest
from clipcleaner_core.errors import DataError
from clipcleaner_core.export import export, export_bytes, kept_mask, read_table, table_digest

CLASSES = ("cat", "dog", "frog")


def make_table(paths, *, seed=0, with_truth=True):
    rng = np.random.default_rng(seed)
    n = len(paths)
    given = np.arange(n) % 3
    suggested = (given + (np.arange(n) % 4 == 0)) % 3
    clean = rng.random(n) > 0.3
    clean[1] = True  # so the "drop" on row 1 removes a sample that would otherwise be kept
    clean[2] = clean[3] = False  # so "keep" and "relabel" keep samples that would otherwise go
    decision = pd.array([""] * n, dtype="str")  # no decision is "" (schema.NO_DECISION), never NaN
    decision[1], decision[2], decision[3] = "drop", "keep", "relabel"
    final = given.copy()
    final[3] = suggested[3] if suggested[3] != given[3] else (given[3] + 1) % 3
    zs = rng.random(n)
    table = pd.DataFrame({
        "index": np.arange(n, dtype=np.int64), "path": pd.array(list(paths), dtype="str"),
        "given_label": given.astype(np.int64), "suggested_label": suggested.astype(np.int64),
        "label_score": zs / 3, "is_label_issue": ~clean, "is_clean": clean,
        "zs_loss_score": zs, "zs_consistency": rng.random(n), "lr_loss_score": np.full(n, np.nan),
        "lr_consistency": np.full(n, np.nan), "zs_clean_prob": rng.random(n),
        "lr_clean_prob": np.full(n, np.nan), "review_decision": decision,
        "final_label": final.astype(np.int64),
    })
    if with_truth:
        table["true_label"] = given.astype(np.int64)
        table["is_noisy"] = np.zeros(n, dtype=bool)
    return table


def expected_kept(table):
    """Independent oracle for make_table's decisions: is_clean, row 1 dropped, rows 2 and 3 kept."""
    expected = table["is_clean"].to_numpy(dtype=bool).copy()
    expected[1] = False  # "drop"
    expected[[2, 3]] = True  # "keep", "relabel"
    return expected


@pytest.fixture
def folder_dataset(tmp_path):
    root = tmp_path / "data"
    paths = []
    for i in range(12):
        rel = f"{CLASSES[i % 3]}/img{i // 3}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (i * 20, 0, 0)).save(root / rel)
        paths.append(rel)
    dataset = Dataset(name="pets", kind="imagefolder", root=root, class_names=CLASSES,
                      labels=np.arange(12) % 3, paths=paths, spec=str(root))
    return dataset, make_table(paths)


@pytest.fixture
def memory_dataset():
    images = np.random.default_rng(0).integers(0, 255, size=(9, 8, 8, 3), dtype=np.uint8)
    paths = [f"digits/{i:04d}" for i in range(9)]
    dataset = Dataset(name="demo", kind="demo", root=".", class_names=CLASSES,
                      labels=np.arange(9) % 3, paths=paths, images=images, spec="demo")
    return dataset, make_table(paths)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_table_formats_read_back_equal(tmp_path, folder_dataset, fmt):
    _, table = folder_dataset
    out = export(table, fmt, tmp_path / f"scores.{fmt}", meta={"theta_cons": 0.8})
    pd.testing.assert_frame_equal(read_table(out), table)
    sidecar = read_sidecar(out)
    assert sidecar["theta_cons"] == 0.8 and sidecar["export"]["format"] == fmt
    assert sidecar["export"]["table_sha256"] == table_digest(table)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_clean_only_keeps_reviewed_and_clean_rows(tmp_path, folder_dataset):
    _, table = folder_dataset
    back = read_table(export(table, "csv", tmp_path / "clean.csv", clean_only=True))
    kept = kept_mask(table)
    assert kept[2] and kept[3] and not kept[1]
    assert table["is_clean"].iloc[1] and not table["is_clean"].iloc[2] and not table["is_clean"].iloc[3]
    expected = expected_kept(table)
    assert np.flatnonzero(expected != table["is_clean"].to_numpy()).tolist() == [1, 2, 3]  # all three bite
    assert kept.tolist() == expected.tolist()
    assert back["index"].tolist() == table["index"][expected].tolist()
    assert back["index"].tolist() == [i for i in range(len(table)) if expected[i]]


def test_table_without_optional_columns_round_trips(tmp_path):
    table = make_table([f"p{i}.jpg" for i in range(5)], with_truth=False)
    pd.testing.assert_frame_equal(read_table(export(table, "json", tmp_path / "t.json")), table)


def test_manifest_in_dataset_folder_reloads_with_final_labels(folder_dataset):
    dataset, table = folder_dataset
    out = export(table, "manifest", dataset.root / "clean.csv", dataset=dataset)
    manifest = pd.read_csv(out)
    assert list(manifest.columns) == ["path", "label"] and not manifest["path"].str.startswith("/").any()
    reloaded = load_manifest(out)
    kept = table[kept_mask(table)]
    assert len(reloaded) == len(kept)
    assert [reloaded.class_names[k] for k in reloaded.labels] == [CLASSES[k] for k in kept["final_label"]]
    assert manifest.loc[manifest["path"] == table.loc[3, "path"], "label"].item() == CLASSES[table.loc[3, "final_label"]]


def test_manifest_outside_dataset_uses_absolute_paths(tmp_path, folder_dataset):
    dataset, table = folder_dataset
    out = export(table, "manifest", tmp_path / "out" / "clean.csv", dataset=dataset)
    manifest = pd.read_csv(out)
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in manifest["path"])
    reloaded = load_manifest(out)  # and it opens as a dataset again
    assert len(reloaded) == int(kept_mask(table).sum()) and reloaded.bad_files.empty


def test_manifest_of_a_dataset_with_a_relative_root_points_at_its_images(tmp_path, folder_dataset,
                                                                          monkeypatch):
    """A folder given relative to the working folder (``--data imgs``) is not relative to the
    manifest's folder: the manifest written elsewhere still names the real files."""
    dataset, table = folder_dataset
    monkeypatch.chdir(Path(dataset.root).parent)
    relative = dataclasses.replace(dataset, root=Path(Path(dataset.root).name))
    out = export(table, "manifest", tmp_path / "elsewhere" / "clean.csv", dataset=relative)
    assert all(os.path.isfile(p) for p in pd.read_csv(out)["path"])
    assert len(load_manifest(out)) == int(kept_mask(table).sum())


def test_manifest_of_in_memory_dataset_points_to_imagefolder(tmp_path, memory_dataset):
    dataset, table = memory_dataset
    with pytest.raises(DataError, match="imagefolder"):
        export(table, "manifest", tmp_path / "m.csv", dataset=dataset)


@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_imagefolder_holds_kept_samples_under_final_labels(tmp_path, folder_dataset, link):
    dataset, table = folder_dataset
    out = export(table, "imagefolder", tmp_path / "clean", dataset=dataset, link=link)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    kept = table[kept_mask(table)]
    assert len(files) == len(kept)
    row = table.loc[3]
    source_bytes = (dataset.root / row["path"]).read_bytes()
    relabelled_into = [p.parent.name for p in out.rglob("*.png") if p.read_bytes() == source_bytes]
    assert relabelled_into == [CLASSES[row["final_label"]]] and row["final_label"] != row["given_label"]
    sample = next(out.rglob("*.png"))
    assert sample.is_symlink() == (link == "symlink")
    assert Image.open(sample).size == (4, 4)
    assert read_sidecar(out)["export"]["kept"] == len(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "clean.json", "data"]


def test_in_memory_dataset_exports_png_files(tmp_path, memory_dataset):
    dataset, table = memory_dataset
    seen = []
    out = export(table, "imagefolder", tmp_path / "pngs", dataset=dataset,
                 progress=lambda stage, done, total, rate: seen.append((done, total)))
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == kept_mask(table).sum() and seen[-1][0] == seen[-1][1] == len(pngs)
    first = table[kept_mask(table)].iloc[0]
    path = out / CLASSES[first["final_label"]] / "digits_{:04d}.png".format(first["index"])
    assert np.array_equal(np.asarray(Image.open(path)), dataset.images[first["index"]])


def test_refuses_to_write_inside_or_over_the_dataset(tmp_path, folder_dataset):
    dataset, table = folder_dataset
    for out in (dataset.root / "export", dataset.root, tmp_path):
        with pytest.raises(DataError, match="refusing"):
            export(table, "imagefolder", out, dataset=dataset, overwrite=True)
    with pytest.raises(DataError, match="one of the dataset's images"):
        export(table, "csv", dataset.root / dataset.paths[0], dataset=dataset)
    assert len(list(dataset.root.rglob("*.png"))) == 12


def test_non_empty_folder_needs_overwrite_then_is_replaced(tmp_path, folder_dataset):
    dataset, table = folder_dataset
    out = tmp_path / "clean"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(DataError, match="overwrite"):
        export(table, "imagefolder", out, dataset=dataset)
    export(table, "imagefolder", out, dataset=dataset, overwrite=True, link="copy")
    assert not (out / "old.txt").exists() and len(list(out.rglob("*.png"))) == kept_mask(table).sum()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failure_midway_leaves_no_partial_folder_or_file(tmp_path, folder_dataset, monkeypatch):
    dataset, table = folder_dataset
    out = tmp_path / "clean"
    out.mkdir()
    (out / "previous.txt").write_text("keep me")
    calls = []

    def failing_copy(src, dst, **kwargs):
        calls.append(src)
        if len(calls) == 3:
            raise OSError("disk full")
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(export_module.shutil, "copy2", failing_copy)
    with pytest.raises(DataError, match="cannot write the imagefolder export .* disk full"):
        export(table, "imagefolder", out, dataset=dataset, link="copy", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "data"]
    assert [p.name for p in out.iterdir()] == ["previous.txt"]

    monkeypatch.setattr(export_module, "export_bytes", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export(table, "csv", tmp_path / "scores.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "data"]


def test_recipe_records_settings_counts_and_hash(tmp_path, folder_dataset):
    dataset, table = folder_dataset
    meta = {"encoder": {"model": "ViT-B-32"}, "selection": {"theta_gmm": 0.5}, "prompts_fingerprint": "ab"}
    recipe = json.loads(export(table, "recipe", tmp_path / "recipe.json", dataset=dataset, meta=meta).read_text())
    assert recipe["settings"] == meta and recipe["dataset"]["fingerprint"] == dataset.fingerprint()
    summary = recipe["table"]
    assert summary["rows"] == 12 and summary["kept"] == int(kept_mask(table).sum())
    assert summary["kept"] == int(expected_kept(table).sum())
    assert summary["relabelled"] == 1 and summary["reviewed"] == {"drop": 1, "keep": 1, "relabel": 1}
    assert sum(summary["kept_per_class"].values()) == summary["kept"]
    assert summary["table_sha256"] == table_digest(table.sample(frac=1, random_state=0))
    changed = table.copy()
    changed.loc[0, "final_label"] = 2
    assert table_digest(changed) != summary["table_sha256"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json", "manifest", "recipe"])
def test_export_bytes_matches_file_export(tmp_path, folder_dataset, fmt):
    _, table = folder_dataset
    data = export_bytes(table, fmt, class_names=CLASSES)
    assert data
    if fmt in ("csv", "parquet", "json"):
        out = tmp_path / f"t.{fmt}"
        out.write_bytes(data)
        pd.testing.assert_frame_equal(read_table(out), table)
    if fmt == "manifest":
        assert data.decode().splitlines()[0] == "path,label"
    written = export(table, fmt, tmp_path / "file" / f"export.{fmt}", class_names=CLASSES).read_bytes()
    if fmt == "recipe":  # the creation time may tick between the two calls
        from_bytes, from_file = json.loads(data), json.loads(written)
        assert from_bytes.pop("created") and from_file.pop("created")
        assert from_bytes == from_file
        assert from_bytes["table"]["rows"] == 12 and from_bytes["class_names"] == list(CLASSES)
    else:
        assert data == written
    if fmt == "manifest":
        kept = [i for i in range(len(table)) if expected_kept(table)[i]]
        assert data.decode().splitlines()[1:] == [f"{table.loc[i, 'path']},{CLASSES[table.loc[i, 'final_label']]}"
                                                  for i in kept]


def test_unknown_format_and_bad_labels_are_refused(tmp_path, folder_dataset):
    _, table = folder_dataset
    with pytest.raises(ValueError, match="csv, parquet"):
        export(table, "xlsx", tmp_path / "x.xlsx")
    with pytest.raises(DataError, match="class names"):
        export(table, "manifest", tmp_path / "m.csv", class_names=("only",))
    with pytest.raises(DataError, match="needs the dataset"):
        export(table, "imagefolder", tmp_path / "f")


def test_a_manifest_datasets_root_only_guards_its_images(tmp_path, folder_dataset):
    """A manifest whose absolute paths lie in two folders has their common parent as its root; an
    ImageFolder export beside them adds nothing to that dataset, one over its images is refused."""
    dataset, table = folder_dataset
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label\n" + "".join(f"{dataset.root / p},{CLASSES[i % 3]}\n"
                                                 for i, p in enumerate(dataset.paths)))
    listed = load_manifest(manifest)
    assert Path(listed.root) == dataset.root
    export(table, "imagefolder", tmp_path / "lists" / "clean", dataset=listed, link="copy")
    export(table, "imagefolder", dataset.root / "clean", dataset=listed, link="copy")
    assert len(list((dataset.root / "clean").rglob("*.png"))) == kept_mask(table).sum()
    for out in (dataset.root / "cat", dataset.root):
        with pytest.raises(DataError, match="refusing"):
            export(table, "imagefolder", out, dataset=listed, overwrite=True)
    imagefolder, _ = folder_dataset
    with pytest.raises(DataError, match="inside the dataset folder"):  # an image folder: always
        export(table, "imagefolder", dataset.root / "clean2", dataset=imagefolder)
