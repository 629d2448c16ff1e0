"""Dataset page: pick a source, see counts and samples, inject noise; bad paths are refused."""
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_helpers import metric, open_app

PAGE = "pages/1_dataset.py"


@pytest.fixture()
def at():
    return open_app(PAGE)


def write_imagefolder(root: Path, *, per_class=3, corrupt=True) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if corrupt:
        (root / "dog" / "broken.png").write_bytes(b"not a png")
    return root


def test_demo_shows_counts_samples_and_known_noise(at):
    assert metric(at, "Images") == "1,797"
    assert metric(at, "Classes") == "10"
    assert at.get("plotly_chart"), "class-count chart missing"
    assert len(at.image) >= 8, "sample grid missing"
    assert metric(at, "Wrong labels (known)").endswith("%")


def test_symmetric_noise_changes_the_flip_rate_and_keeps_truth(at):
    before = float(metric(at, "Wrong labels (known)").rstrip("%"))
    at.selectbox(key="noise_mode").set_value("sym")
    at.slider(key="noise_rate").set_value(0.2)
    at.button[[b.label for b in at.button].index("Apply")].click().run()
    assert not at.exception, at.exception
    after = float(metric(at, "Wrong labels (known)").rstrip("%"))
    assert 12 < after < 24 < before
    assert any("sym at rate 0.20" in i.value for i in at.info)
    noise = at.session_state["clipcleaner_active"].noise
    assert (noise.mode, noise.rate) == ("sym", 0.2)


def test_path_outside_data_roots_names_the_setting(at, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    at.radio(key="dataset_source").set_value("ImageFolder path").run()
    at.text_input(key="path_imagefolder").input("/etc")
    at.button(key="load_imagefolder").click().run()
    assert not at.exception
    assert any("CLIPCLEANER_DATA_ROOTS" in e.value for e in at.error)
    assert metric(at, "Images") == "1,797"  # the demo stays active
    assert at.session_state["clipcleaner_active"].dataset_spec == "demo"


def test_imagefolder_path_loads_with_bad_files_listed(at, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    root = write_imagefolder(tmp_path / "pets")
    at.radio(key="dataset_source").set_value("ImageFolder path").run()
    at.text_input(key="path_imagefolder").input(str(root))
    at.button(key="load_imagefolder").click().run()
    assert not at.exception, at.exception
    assert metric(at, "Images") == "6"
    assert metric(at, "Unreadable files") == "1"
    bad = at.dataframe[-1].value
    assert bad["path"].str.contains("broken.png").any()


def test_zip_upload_is_extracted_and_loaded(at, tmp_path):
    root = write_imagefolder(tmp_path / "pets", corrupt=False)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in root.rglob("*.png"):
            archive.write(file, file.relative_to(tmp_path))
    at.radio(key="dataset_source").set_value("Upload a zip or manifest").run()
    at.file_uploader[0].set_value(("pets.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception, at.exception
    assert metric(at, "Images") == "6"
    assert "uploads" in at.session_state["clipcleaner_active"].dataset_spec


def test_unsafe_zip_upload_is_refused(at):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escape.png", b"x")
    at.radio(key="dataset_source").set_value("Upload a zip or manifest").run()
    at.file_uploader[0].set_value(("bad.zip", buffer.getvalue(), "application/zip")).run()
    assert not at.exception
    assert any("outside the upload folder" in e.value for e in at.error)
    assert metric(at, "Images") == "1,797"
