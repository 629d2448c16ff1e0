"""The command line: each subcommand end to end, and bad input as one line with exit status 2."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core.cli import main
from clipcleaner_core.metrics import make_synthetic_problem

ROOT = Path(__file__).resolve().parent.parent


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo_scores(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "scores.csv"
    assert main(["run", "--data", "demo", "--model", "pixels", "--out", str(out)]) == 0
    return out


def test_run_on_demo_writes_table_sidecar_and_metrics(demo_scores):
    table = pd.read_csv(demo_scores)
    meta = json.loads(Path(str(demo_scores) + ".json").read_text())
    assert len(table) == 1797 and {"is_clean", "label_score", "true_label"} <= set(table.columns)
    assert meta["dataset"]["spec"] == "demo" and meta["metrics"]["precision"] > 0.95
    assert meta["selection"]["theta_cons"] == 0.8


def test_export_imagefolder_and_recipe_from_a_run(demo_scores, tmp_path, capsys):
    code, out, _ = _cli(capsys, "export", "--scores", demo_scores, "--format", "imagefolder",
                        "--out", tmp_path / "clean")
    assert code == 0, out
    kept = pd.read_csv(demo_scores)["is_clean"].sum()
    files = list((tmp_path / "clean").rglob("*.png"))
    assert len(files) == kept
    code, _, _ = _cli(capsys, "export", "--scores", demo_scores, "--format", "recipe", "--out", tmp_path / "r.json")
    recipe = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and "table_sha256" in json.dumps(recipe)


def test_select_from_arrays_recovers_flipped_labels(tmp_path, capsys):
    problem = make_synthetic_problem(n=600, num_classes=6, dim=32, noise_rate=0.4, seed=1)
    problem["image_features"] = problem.pop("features")
    paths = {}
    for name, array in problem.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    code, out, err = _cli(capsys, "select", "--image-features", paths["image_features"],
                          "--labels", paths["labels"], "--text-features", paths["text_features"],
                          "--text-labels", paths["text_labels"], "--true-labels", paths["true_labels"],
                          "--out", tmp_path / "scores.parquet")
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(table) == 600 and table["zs_consistency"].notna().all()
    assert json.loads(out)["precision"] >= 0.9


def _write_imagefolder(root: Path, n_per_class=6):
    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 15, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.PNG")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")


def test_embed_writes_then_reuses_and_lists_bad_files(tmp_path, capsys):
    _write_imagefolder(tmp_path / "data")
    code, out, err = _cli(capsys, "embed", "--data", tmp_path / "data", "--model", "pixels")
    first = json.loads(out)
    assert code == 0 and first["status"] == "written" and first["n"] == 12
    assert first["skipped_at_load"] == 1  # broken.jpg is listed, not fatal
    code, out, _ = _cli(capsys, "embed", "--data", tmp_path / "data", "--model", "pixels")
    assert json.loads(out)["status"] == "reused" and json.loads(out)["key"] == first["key"]


@pytest.mark.parametrize("argv, needle", [
    (["run", "--data", "/no/such/folder", "--out", "x.csv"], "/no/such/folder"),
    (["run", "--data", "demo", "--theta-cons", "1.5", "--out", "x.csv"], "--theta-cons"),
    (["run", "--data", "demo", "--out", "scores.txt"], ".txt"),
    (["run", "--data", "demo", "--model", "ViT-B-32", "--out", "x.csv"], "--pretrained"),
    (["select", "--image-features", "missing.npy", "--labels", "y.npy", "--out", "x.csv"], "missing.npy"),
    (["export", "--scores", "nope.csv", "--format", "csv", "--out", "y.csv"], "nope.csv"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert not any(tmp_path.iterdir()), "a failed command left files behind"


def test_mismatched_arrays_are_refused_with_the_shapes(tmp_path, capsys):
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.zeros(9, dtype=np.int64))
    code, _, err = _cli(capsys, "select", "--image-features", tmp_path / "X.npy",
                        "--labels", tmp_path / "y.npy", "--out", tmp_path / "s.csv")
    assert code == 2 and "10" in err and "9" in err
    assert not (tmp_path / "s.csv").exists()


def test_module_entry_point_prints_help():
    proc = subprocess.run([sys.executable, "-m", "clipcleaner_core", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("embed", "select", "run", "export", "train"):
        assert command in proc.stdout
