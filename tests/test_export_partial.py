"""A killed ImageFolder export leaves a hidden folder; the next export removes it, but never a live
writer's folder nor one this app did not make."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from clipcleaner_core.data import Dataset
from clipcleaner_core.export import export
from clipcleaner_core.partial import LOCK_SUFFIX, remove_stale_partials

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = textwrap.dedent("""
    import sys, time
    import numpy as np, pandas as pd
    from clipcleaner_core.data import Dataset
    from clipcleaner_core.export import export

    n = 600
    rng = np.random.default_rng(0)
    dataset = Dataset(name="mem", kind="demo", root=".", class_names=("a", "b"),
                      labels=np.arange(n) % 2, paths=[f"s{i}" for i in range(n)],
                      images=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8))
    table = pd.DataFrame({"index": np.arange(n), "final_label": np.arange(n) % 2, "is_clean": True})

    def stall(stage, done, total, rate):
        print("filling", flush=True)
        time.sleep(600)  # stands in for a long export; the test kills us here

    export(table, "imagefolder", sys.argv[1], dataset=dataset, progress=stall)
""")


def _dataset(n=6):
    rng = np.random.default_rng(1)
    dataset = Dataset(name="mem", kind="demo", root=".", class_names=("a", "b"), labels=np.arange(n) % 2,
                      paths=[f"s{i}" for i in range(n)], images=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8))
    table = pd.DataFrame({"index": np.arange(n), "final_label": np.arange(n) % 2, "is_clean": True})
    return dataset, table


def _start_export(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "filling"  # the partial folder is half full now
    return proc


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_next_export_removes_what_a_killed_export_left(tmp_path):
    proc = _start_export(tmp_path / "clean")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    left = _hidden(tmp_path)
    assert any(n.endswith(".partial") for n in left) and any(n.endswith(LOCK_SUFFIX) for n in left)
    assert not (tmp_path / "clean").exists()
    (tmp_path / ".notes.partial").mkdir()  # not made by this app: left alone
    dataset, table = _dataset()
    export(table, "imagefolder", tmp_path / "other", dataset=dataset)
    assert _hidden(tmp_path) == [".notes.partial"]
    assert len(list((tmp_path / "other").rglob("*.png"))) == 6


def test_a_live_exports_partial_folder_is_left_alone(tmp_path):
    proc = _start_export(tmp_path / "clean")
    try:
        before = _hidden(tmp_path)
        assert remove_stale_partials(tmp_path) == []
        assert _hidden(tmp_path) == before
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert remove_stale_partials(tmp_path) and _hidden(tmp_path) == []


def test_an_export_killed_mid_swap_gets_its_previous_folder_back(tmp_path):
    dataset, table = _dataset()
    export(table, "imagefolder", tmp_path / "clean", dataset=dataset)
    # what a kill between the two renames of the swap leaves: out moved aside, lock free
    token = ".clean.0123456789ab"
    os.rename(tmp_path / "clean", tmp_path / f"{token}.old")
    (tmp_path / f"{token}.partial").mkdir()
    (tmp_path / f"{token}{LOCK_SUFFIX}").write_text(
        '{"app": "clipcleaner", "out": "clean", "partial": "%s.partial", "old": "%s.old"}' % (token, token))
    remove_stale_partials(tmp_path)
    assert _hidden(tmp_path) == [] and len(list((tmp_path / "clean").rglob("*.png"))) == 6
