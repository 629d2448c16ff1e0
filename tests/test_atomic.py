"""Atomic writes: all or nothing, usual permissions, sidecars and stable hashes."""
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
