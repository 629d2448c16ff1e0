"""Atomic writes: all or nothing, usual permissions, sidecars that never describe other bytes, hashes."""
import os

import numpy as np
import pytest

from clipcleaner_core import atomic


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_new_files_get_umask_permissions_not_0600(tmp_path):
    path = atomic.write_text(tmp_path / "a.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic._umask()
    os.chmod(path, 0o640)
    atomic.write_text(path, "y")
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "y"


def test_npy_and_sidecar_round_trip(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = atomic.save_npy(tmp_path / "f.npy", array)
    atomic.write_sidecar(path, {"model": "pixels", "n": np.int64(3)})
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), array)
    assert atomic.read_sidecar(path) == {"model": "pixels", "n": 3}


def test_hashes_depend_on_content_only():
    a = np.arange(5)
    assert atomic.hash_array(a) == atomic.hash_array(a.copy())
    assert atomic.hash_array(a) != atomic.hash_array(a.astype(np.int32))
    assert atomic.hash_json({"b": 1, "a": 2}) == atomic.hash_json({"a": 2, "b": 1})


def test_replacing_an_artifact_drops_its_old_sidecar_first(tmp_path, monkeypatch):
    path = atomic.save_npy(tmp_path / "fit.npy", np.arange(4))
    atomic.write_sidecar(path, {"config": "old"})
    assert atomic.read_sidecar(path) == {"config": "old"}
    real_replace = os.replace

    def killed_after_replace(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt  # the process stops right after the new artifact lands

    monkeypatch.setattr(atomic.os, "replace", killed_after_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic.save_npy(path, np.arange(8))
    monkeypatch.undo()
    assert atomic.read_sidecar(path) == {}  # new bytes never carry the old description
    atomic.write_sidecar(path, {"config": "new"})
    assert atomic.read_sidecar(path) == {"config": "new"}


def test_a_sidecar_of_other_bytes_or_without_its_artifact_is_not_valid(tmp_path):
    path = atomic.save_npy(tmp_path / "a.npy", np.arange(4))
    atomic.write_sidecar(path, {"n": 4})
    path.write_bytes(path.read_bytes() + b"extra")  # changed behind the app's back
    assert atomic.read_sidecar(path) == {}
    atomic.remove_artifact(path)
    assert not path.exists() and not atomic.sidecar_path(path).exists()
    atomic.write_json(atomic.sidecar_path(path), {"n": 4})
    assert atomic.read_sidecar(path) == {}
    atomic.sidecar_path(path).write_text("{not json")
    path.write_bytes(b"x")
    assert atomic.read_sidecar(path) == {}
