"""Every file the ImageFolder loader passes over is listed in bad_files with a reason."""
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from clipcleaner_core.data import load_imagefolder, load_manifest


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _reasons(dataset) -> dict:
    return dict(zip(dataset.bad_files["path"], dataset.bad_files["reason"]))


def test_non_images_svg_hidden_links_and_loose_images_are_listed(tmp_path):
    for rel in ("cat/a.png", "dog/b.png", "elsewhere/c.png", "loose.png"):
        _write(tmp_path / "data" / rel, _png())
    _write(tmp_path / "data" / "cat" / "logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    _write(tmp_path / "data" / "cat" / "notes.txt", b"x")
    _write(tmp_path / "data" / "cat" / ".hidden.png", _png())
    _write(tmp_path / "data" / "dog" / ".thumbs" / "t.png", _png())
    (tmp_path / "data" / "dog" / "linked").symlink_to(tmp_path / "data" / "elsewhere")
    dataset = load_imagefolder(tmp_path / "data")
    assert sorted(dataset.paths) == ["cat/a.png", "dog/b.png", "elsewhere/c.png"]
    reasons = _reasons(dataset)
    assert "SVG" in reasons["cat/logo.svg"] and "convert it to PNG" in reasons["cat/logo.svg"]
    assert "not an image file (extension .txt)" == reasons["cat/notes.txt"]
    assert "hidden" in reasons["cat/.hidden.png"] and "hidden" in reasons["dog/.thumbs/"]
    assert "not followed" in reasons["dog/linked/"]
    assert "outside every class folder" in reasons["loose.png"]


def test_non_utf8_file_and_folder_names_are_listed_not_fatal(tmp_path):
    root = tmp_path / "data"
    _write(root / "cat" / "ok.png", _png())
    _write(root / "dog" / "ok.png", _png())
    base = os.fsencode(root)
    with open(os.path.join(base, b"cat", b"caf\xe9.png"), "wb") as handle:
        handle.write(_png())
    os.mkdir(os.path.join(base, b"\xff-class"))
    with open(os.path.join(base, b"\xff-class", b"x.png"), "wb") as handle:
        handle.write(_png())
    dataset = load_imagefolder(root)
    dataset.fingerprint()  # every kept path encodes
    assert dataset.class_names == ("cat", "dog") and sorted(dataset.paths) == ["cat/ok.png", "dog/ok.png"]
    reasons = _reasons(dataset)
    assert "not valid UTF-8" in reasons["cat/caf\\xe9.png"]
    assert "not valid UTF-8" in reasons["\\xff-class/"]
    dataset.bad_files.to_csv(tmp_path / "bad.csv")  # the table itself can be saved


def test_a_folder_deeper_than_the_system_allows_is_listed(tmp_path):
    root = tmp_path / "data"
    _write(root / "cat" / "ok.png", _png())
    _write(root / "dog" / "ok.png", _png())
    fd = os.open(root / "dog", os.O_RDONLY)
    levels = 0
    try:
        while len(str(root)) + levels * 201 < os.pathconf(root, "PC_PATH_MAX") + 400:
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, levels = child, levels + 1
        with open(os.open("deep.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as handle:
            handle.write(_png())
    finally:
        os.close(fd)
    dataset = load_imagefolder(root)
    assert sorted(dataset.paths) == ["cat/ok.png", "dog/ok.png"]
    too_long = [r for r in dataset.bad_files["reason"] if "too long" in r.lower()]
    assert too_long and "left out" in too_long[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_an_unreadable_class_folder_is_listed(tmp_path):
    _write(tmp_path / "cat" / "ok.png", _png())
    _write(tmp_path / "dog" / "ok.png", _png())
    os.chmod(tmp_path / "dog", 0)
    try:
        dataset = load_imagefolder(tmp_path)
    finally:
        os.chmod(tmp_path / "dog", 0o755)
    assert dataset.class_names == ("cat", "dog") and dataset.paths == ("cat/ok.png",)
    assert "cannot be read" in _reasons(dataset)["dog/"]


def test_manifest_rows_naming_svgs_or_folders_are_listed(tmp_path):
    _write(tmp_path / "a.png", _png())
    _write(tmp_path / "b.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    (tmp_path / "sub").mkdir()
    (tmp_path / "m.csv").write_text("path,label\na.png,0\nb.svg,1\nsub,1\n")
    reasons = _reasons(load_manifest(tmp_path / "m.csv"))
    assert "SVG" in reasons["b.svg"] and "folder" in reasons["sub"]


def test_a_dataset_built_by_another_loader_with_a_non_utf8_name_still_fingerprints(tmp_path):
    from clipcleaner_core.data import Dataset

    name = os.fsdecode(b"caf\xe9.png")  # how os.listdir returns undecodable bytes
    with open(os.path.join(os.fsencode(tmp_path), os.fsencode(name)), "wb") as handle:
        handle.write(_png())
    dataset = Dataset(name="x", kind="imagefolder", root=tmp_path, class_names=("a",), labels=[0],
                      paths=[name])
    assert len(dataset.fingerprint()) == 16 and dataset.abspath(0).is_file()
