"""Where writes fail: full and read-only disks (a failing writer and a real tmpfs), and the
temporary files of writers killed with SIGKILL."""
import errno
import json
import os
import shutil
import sys
import textwrap
import time

import numpy as np
import pytest

from clipcleaner_core import atomic, storage
from fault_helpers import run_paused, small_disk


def test_a_write_that_runs_out_of_space_names_the_folder_and_leaves_no_temp(tmp_path, monkeypatch):
    def full_disk(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "posix_fallocate", full_disk)
    with pytest.raises(storage.StorageError, match=f"disk space in {tmp_path}.*needs 1.0 MiB"):
        with atomic.atomic_path(tmp_path / "features.npy", size=1 << 20, preallocate=True):
            pytest.fail("the write must stop before the caller writes")
    monkeypatch.undo()
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(storage.StorageError, match="not enough disk space"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_the_free_space_is_checked_before_writing(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(storage.StorageError) as caught:
        with atomic.atomic_path(tmp_path / "huge.npy", size=free + (1 << 40)):
            pytest.fail("nothing may be written")
    assert caught.value.folder == tmp_path and caught.value.needed == free + (1 << 40)
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC  # tolerant callers still tolerate
    assert not list(tmp_path.iterdir())


def test_a_full_or_read_only_small_disk_gives_one_message(tmp_path):
    script = textwrap.dedent("""
        import json, os, subprocess, sys
        import numpy as np
        from clipcleaner_core import atomic, storage
        disk = sys.argv[1]
        out = {}
        try:
            atomic.save_npy(os.path.join(disk, "big.npy"), np.zeros(300_000, np.float32))
        except storage.StorageError as exc:
            out["error"] = str(exc)
        out["after_error"] = sorted(os.listdir(disk))
        atomic.save_npy(os.path.join(disk, "small.npy"), np.arange(1000, dtype=np.float32))
        out["small_ok"] = bool((np.load(os.path.join(disk, "small.npy")) == np.arange(1000)).all())
        subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
        try:
            atomic.write_text(os.path.join(disk, "sub", "t.txt"), "x")
        except storage.StorageError as exc:
            out["read_only"] = str(exc)
        print(json.dumps(out))
    """)
    disk = tmp_path / "disk"
    done = small_disk(disk, 512, [sys.executable, "-c", script, str(disk)])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["error"].startswith(f"not enough disk space in {disk} to write big.npy (needs 1.1 MiB")
    assert out["after_error"] == [] and out["small_ok"]
    assert out["read_only"] == (f"cannot write t.txt: {disk}/sub is on a read-only file system; choose a "
                                "writable folder.")


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from clipcleaner_core import atomic
        atomic.save_npy(sys.argv[1], np.ones(1000))
    """)
    target = tmp_path / "scores.npy"
    left = []
    for _ in range(3):  # each killed run removes the temp file of the one before
        run_paused(code, "before:scores.npy:1", tmp_path, str(target))
        left.append([p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")])
    assert [len(names) for names in left] == [1, 1, 1] and len({n[0] for n in left}) == 3
    assert not target.exists()
    with atomic.atomic_path(tmp_path / "other.npy") as tmp:  # a live writer's temp is kept
        atomic.SWEEP_EVERY_S, saved = 0.0, atomic.SWEEP_EVERY_S
        try:
            atomic.save_npy(target, np.zeros(3))
        finally:
            atomic.SWEEP_EVERY_S = saved
        assert tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npy", "scores.npy"]


def test_temp_files_of_older_versions_are_removed_once_old_and_others_never(tmp_path):
    old, fresh = tmp_path / ".features.npy.k3j_x9qa.tmp", tmp_path / ".features.npy.p0o9i8u7.tmp"
    foreign = tmp_path / ".someone-elses.tmp"
    for path in (old, fresh, foreign):
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * storage.LEGACY_TEMP_AGE_S
    os.utime(old, (hours_ago, hours_ago))
    os.utime(foreign, (hours_ago, hours_ago))
    assert storage.remove_stale_temps(tmp_path) == [old]
    assert fresh.exists() and foreign.exists()


def test_the_cache_hint_is_given_only_for_folders_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    inside = storage.no_space_error(tmp_path / "cache" / "fits", what="a.npz", needed=10, free=1)
    outside = storage.no_space_error(tmp_path / "exports", what="scores.csv", needed=10, free=1)
    assert "CLIPCLEANER_CACHE" in str(inside) and "CLIPCLEANER_CACHE" not in str(outside)
    assert str(outside) == (f"not enough disk space in {tmp_path / 'exports'} to write scores.csv (needs 10 B, "
                            "1 B free); free some space there and run again: nothing was left half-written, "
                            "and finished work is kept.")
