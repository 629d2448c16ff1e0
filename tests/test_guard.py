"""No command writes over its own inputs (by name, symbolic link or hard link), nor a run into a
dataset folder; synthetic noise files go to the cache, not the dataset."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcleaner_core.cli import main
from clipcleaner_core.data import apply_noise, load_dataset

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "path,label\n" + "\n".join(f"img{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(6)) + "\n"


def _dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (50, 60, 70)).save(buffer, format="PNG")
    for i in range(6):
        (root / f"img{i}.png").write_bytes(buffer.getvalue())
    (root / "m.csv").write_text(MANIFEST)
    return root / "m.csv"


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_refuses_to_write_its_score_table_over_its_manifest(tmp_path):
    manifest = _dataset(tmp_path / "data")
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "clipcleaner_core", "run", "--data", str(manifest),
                           "--model", "pixels", "--out", str(manifest)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refusing to write --out" in proc.stderr and "--data" in proc.stderr, proc.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink", "sidecar"])
def test_outputs_reached_by_links_or_sidecars_are_refused(tmp_path, capsys, link):
    manifest = _dataset(tmp_path / "data")
    out = tmp_path / "scores.csv"
    if link == "symlink":
        out.symlink_to(manifest)
    elif link == "hardlink":
        os.link(manifest, out)
    else:  # --out X also writes X.json, here the prompt set the command reads
        (tmp_path / "scores.csv.json").write_text('{"templates": ["a photo of a {c}."]}')
    before = _snapshot(tmp_path)
    argv = ["run", "--data", manifest, "--model", "pixels", "--out", out]
    if link == "sidecar":
        argv += ["--prompts", tmp_path / "scores.csv.json"]
    assert main([str(a) for a in argv]) == 2
    assert "refusing to write" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_export_refuses_its_own_score_table_and_sidecar(tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(20) % 2)
    assert main(["select", "--image-features", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--out", str(scores)]) == 0
    before = _snapshot(tmp_path)
    for out in (scores, Path(str(scores) + ".json")):
        assert main(["export", "--scores", str(scores), "--format", "json", "--out", str(out)]) == 2
        assert "refusing to write" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_a_training_run_is_not_written_into_the_dataset_folder(tmp_path, capsys):
    _dataset(tmp_path / "data")
    (tmp_path / "data" / "a").mkdir()
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "data" / "run")]) == 2
    assert "inside (or holds) the dataset folder" in capsys.readouterr().err
    assert not (tmp_path / "data" / "run").exists()


def test_synthetic_noise_is_saved_in_the_cache_and_the_recipe_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    manifest = _dataset(tmp_path / "data")
    before = _snapshot(tmp_path / "data")
    noisy = apply_noise(load_dataset(manifest), "sym:0.3")
    assert _snapshot(tmp_path / "data") == before
    saved = Path(noisy.noise["path"])
    assert saved.name == "noise-sym-0.3-0.json" and saved.is_relative_to(tmp_path / "cache")
    assert saved.is_file()
