"""Uploads land under <cache>/uploads/<hash>/ and unsafe archives are refused before writing."""
import io
import stat
import zipfile

import pytest

from clipcleaner_core.errors import DataError
from clipcleaner_core.uploads import save_upload, upload_folder


def _zip(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_zip_with_one_top_folder_returns_that_folder(tmp_path):
    data = _zip({"pets/cat/a.png": b"x", "pets/dog/b.png": b"y", "__MACOSX/pets/._a.png": b"z"})
    root = save_upload(data, "pets.zip", cache_root=tmp_path)
    assert root == upload_folder(data, cache_root=tmp_path) / "pets"
    assert (root / "cat" / "a.png").read_bytes() == b"x"
    assert not (root.parent / "__MACOSX").exists()
    assert save_upload(data, "again.zip", cache_root=tmp_path) == root  # same bytes, same place


@pytest.mark.parametrize("entry", ["../evil.png", "/abs/evil.png", "a/../../evil.png", "C:/evil.png"])
def test_entries_escaping_the_folder_are_refused(tmp_path, entry):
    with pytest.raises(DataError, match="outside the upload folder"):
        save_upload(_zip({"ok/a.png": b"x", entry: b"y"}), "bad.zip", cache_root=tmp_path)
    assert not (tmp_path / "evil.png").exists()
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_links_are_refused(tmp_path):
    with pytest.raises(DataError, match="symbolic link"):
        save_upload(_zip({"a.png": b"x"}, links=("cat/link.png",)), "l.zip", cache_root=tmp_path)


def test_zip_bomb_refused_by_total_uncompressed_size(tmp_path):
    data = _zip({"a.bin": b"\0" * 200_000, "b.bin": b"\0" * 200_000})
    assert len(data) < 5_000
    with pytest.raises(DataError, match="zip bomb"):
        save_upload(data, "bomb.zip", cache_root=tmp_path, max_uncompressed=300_000)
    assert not upload_folder(data, cache_root=tmp_path).exists()
    leftovers = list((tmp_path / "uploads").iterdir()) if (tmp_path / "uploads").exists() else []
    assert leftovers == []


def test_upload_size_cap_names_the_setting(tmp_path):
    with pytest.raises(DataError, match="maxUploadSize"):
        save_upload(b"x" * 2000, "big.zip", cache_root=tmp_path, max_bytes=1000)


def test_manifest_saved_and_other_files_refused(tmp_path):
    path = save_upload(b"path,label\na.png,cat\n", "../my list.csv", cache_root=tmp_path)
    assert path.name == "my_list.csv" and path.read_text().startswith("path,label")
    assert path.parent.parent == tmp_path / "uploads"
    with pytest.raises(DataError, match="expected a .zip"):
        save_upload(b"x", "notes.txt", cache_root=tmp_path)
    with pytest.raises(DataError, match="not a valid zip"):
        save_upload(b"garbage", "x.zip", cache_root=tmp_path)


def test_zip_with_a_manifest_returns_the_manifest(tmp_path):
    data = _zip({"set/labels.csv": b"path,label\nimg/a.png,cat\n", "set/img/a.png": b"x"})
    assert save_upload(data, "set.zip", cache_root=tmp_path).name == "labels.csv"
