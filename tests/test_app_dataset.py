"""Dataset page: pick a source, see counts and samples, inject noise; bad paths are refused."""
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_helpers import metric, open_app, run_until_ready

PAGE = "pages/1_dataset.py"


@pytest.fixture()
def at(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the home folder is a default data root
    monkeypatch.delenv("CLIPCLEANER_DATA_ROOTS", raising=False)
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


def load_folder(at, path):
    at.radio(key="dataset_source").set_value("ImageFolder path").run()
    at.text_input(key="path_imagefolder").input(str(path))
    at.button(key="load_imagefolder").click().run()
    assert not at.exception, at.exception


def test_path_outside_data_roots_says_how_to_add_one(at):
    load_folder(at, "/etc")
    assert any("outside the folders this app may use" in e.value and "Folders this app may use" in e.value
               for e in at.error)
    assert metric(at, "Images") == "1,797"  # the demo stays active
    assert at.session_state["clipcleaner_active"].dataset_spec == "demo"


def test_a_class_folder_symlinked_outside_the_roots_is_refused(at, tmp_path, tmp_path_factory):
    outside = write_imagefolder(tmp_path_factory.mktemp("outside") / "pets", corrupt=False)
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "cat").symlink_to(outside / "cat", target_is_directory=True)
    write_imagefolder(tmp_path / "other", corrupt=False)
    (root / "dog").symlink_to(tmp_path / "other" / "dog", target_is_directory=True)  # inside: fine
    load_folder(at, root)
    assert any("lead outside the folders this app may read" in e.value and str(outside / "cat") in e.value
               for e in at.error), [e.value for e in at.error]
    assert at.session_state["clipcleaner_active"].dataset_spec == "demo"


def test_adding_a_data_root_needs_a_confirmation_and_is_remembered(at, tmp_path_factory):
    from clipcleaner_core.paths import added_roots, remove_data_root

    data = tmp_path_factory.mktemp("shared-data")
    root = write_imagefolder(data / "pets", corrupt=False)
    roots_box = next(e for e in at.expander if e.label.startswith("Folders this app may use"))
    assert any("default (home folder)" in c.value for c in roots_box.caption)
    at.text_input(key="root_new").input(str(data))
    at.button[[b.label for b in at.button].index("Add folder")].click().run()
    assert any("Tick" in e.value for e in at.error) and data not in added_roots()
    at.text_input(key="root_new").input(str(data))
    at.checkbox(key="root_confirm").check()
    at.button[[b.label for b in at.button].index("Add folder")].click().run()
    assert not at.exception, at.exception
    try:
        assert data.resolve() in added_roots()  # kept in the cache: survives a restart
        assert any(str(data.resolve()) in m.value for m in at.markdown)
        load_folder(at, root)
        assert not at.error, [e.value for e in at.error]
        assert metric(at, "Images") == "6"
    finally:
        remove_data_root(data)


def test_imagefolder_path_loads_with_bad_files_listed(at, tmp_path):
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


@pytest.mark.parametrize("with_text", [True, False])
def test_precomputed_embeddings_say_so_in_the_encoder_banner(tmp_path, monkeypatch, with_text):
    from clipcleaner_core.metrics import make_synthetic_problem
    from ui.state import ActiveSettings

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLIPCLEANER_DATA_ROOTS", raising=False)
    problem = make_synthetic_problem(200, 3, 16, noise_rate=0.3, seed=1)
    root = tmp_path / "emb"
    root.mkdir()
    np.save(root / "features.npy", problem["features"].astype(np.float32))
    np.save(root / "labels.npy", problem["labels"])
    if with_text:
        np.save(root / "text_features.npy", problem["text_features"])
        np.save(root / "text_labels.npy", problem["text_labels"])
    at = open_app(None, clipcleaner_active=ActiveSettings(dataset_spec=str(root),
                                                          dataset_format="embeddings"))
    banner = " ".join(c.value for c in at.caption if "Encoder" in c.value)
    assert "precomputed embeddings" in banner and "pixel features" not in banner
    assert ("from its text_features.npy" in banner) == with_text
    assert ("add text_features.npy" in banner) == (not with_text)
    at.switch_page("pages/4_inspect.py")  # Tune shows its own sliders, not the sidebar summary
    run_until_ready(at)
    sidebar = [m.value for m in at.sidebar.markdown]
    assert "precomputed embeddings" in sidebar and "`pixels`" not in sidebar
    summary = next(text for text in sidebar if "lr loss" in text)
    assert ("zs loss" in summary) == with_text
    assert not any("unreadable" in w.value for w in at.warning)  # no images: said, not warned
    assert any("no image at `row/" in c.value for c in at.caption)


def test_a_folder_that_is_not_embeddings_still_opens_the_dataset_page(tmp_path, monkeypatch):
    """The banner never stops the app: a folder named as precomputed embeddings that holds none
    (an address, a moved folder) leaves the Dataset page open, with its error, to pick another."""
    from ui.state import ActiveSettings

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLIPCLEANER_DATA_ROOTS", raising=False)
    folder = write_imagefolder(tmp_path / "images", corrupt=False)
    at = open_app(PAGE, clipcleaner_active=ActiveSettings(dataset_spec=str(folder),
                                                          dataset_format="embeddings"))
    assert any("no features found" in e.value for e in at.error)
    assert any("precomputed embeddings" in c.value for c in at.caption)


def test_an_embeddings_folder_found_by_detection_says_so_in_the_banner(tmp_path, monkeypatch):
    from clipcleaner_core.metrics import make_synthetic_problem
    from ui.state import ActiveSettings

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLIPCLEANER_DATA_ROOTS", raising=False)
    problem = make_synthetic_problem(200, 3, 16, seed=1)
    root = tmp_path / "emb"
    root.mkdir()
    np.save(root / "features.npy", problem["features"].astype(np.float32))
    np.save(root / "labels.npy", problem["labels"])
    at = open_app(None, clipcleaner_active=ActiveSettings(dataset_spec=str(root)))  # format: detected
    banner = " ".join(c.value for c in at.caption if "Encoder" in c.value)
    assert "precomputed embeddings" in banner and "pixel features" not in banner
