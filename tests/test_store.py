"""The SQLite catalogue: decisions survive restarts, undo works, concurrent writers are safe, and
a full disk, a read-only folder, a long lock or a damaged file give one clear message."""
import json
import multiprocessing
import sqlite3
import sys
import textwrap
import threading

import numpy as np
import pytest

from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core import store
from clipcleaner_core.store import Catalogue, CatalogueError
from fault_helpers import small_disk


def test_decisions_survive_reopening_and_latest_wins(tmp_path):
    db = tmp_path / "catalogue.sqlite"
    Catalogue(db).record_decisions("fp1", [(3, "drop", None), (5, "relabel", 2)])
    Catalogue(db).record_decisions("fp1", [(3, "keep", None)])
    Catalogue(db).record_decisions("other", [(3, "drop", None)])
    table = Catalogue(db).decisions("fp1")
    assert list(table.columns[:3]) == ["index", "decision", "final_label"]
    assert table["index"].tolist() == [3, 5]
    assert table["decision"].tolist() == ["keep", "relabel"]
    assert table["final_label"].iloc[1] == 2 and table["final_label"].isna().iloc[0]


def test_undo_last_restores_the_previous_decisions(tmp_path):
    catalogue = Catalogue(tmp_path / "c.sqlite")
    catalogue.record_decisions("fp", [(1, "drop", None), (2, "drop", None)])
    catalogue.record_decisions("fp", [(1, "relabel", 4), (7, "keep", None)])
    assert catalogue.undo_last("fp") == 2
    after = Catalogue(tmp_path / "c.sqlite").decisions("fp")
    assert after["index"].tolist() == [1, 2] and after["decision"].tolist() == ["drop", "drop"]
    assert catalogue.undo_last("fp") == 2
    assert catalogue.decisions("fp").empty
    assert catalogue.undo_last("fp") == 0


def test_bad_decisions_are_refused_naming_the_value(tmp_path):
    catalogue = Catalogue(tmp_path / "c.sqlite")
    with pytest.raises(CLIPCleanerError, match="'delete'"):
        catalogue.record_decisions("fp", [(1, "delete", None)])
    with pytest.raises(CLIPCleanerError, match="new label"):
        catalogue.record_decisions("fp", [(1, "relabel", None)])
    assert catalogue.decisions("fp").empty


def _write_decisions(db, worker, count):
    catalogue = Catalogue(db)
    for i in range(count):
        catalogue.record_decisions("fp", [(worker * 1000 + i, "drop", None)])


def test_concurrent_threads_and_processes_lose_no_decision(tmp_path):
    db = tmp_path / "c.sqlite"
    Catalogue(db)
    ctx = multiprocessing.get_context("fork")  # fork before any thread starts
    procs = [ctx.Process(target=_write_decisions, args=(db, w, 20)) for w in range(3, 5)]
    threads = [threading.Thread(target=_write_decisions, args=(db, w, 20)) for w in range(3)]
    for worker in procs + threads:
        worker.start()
    for worker in threads + procs:
        worker.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(Catalogue(db).decisions("fp")) == 5 * 20


def test_jobs_round_trip(tmp_path):
    catalogue = Catalogue(tmp_path / "c.sqlite")
    job_id = catalogue.add_job("train", ["python", "-m", "x", "--epochs", 3], tmp_path / "run")
    catalogue.update_job(job_id, status="running", pid=123, pgid=123, started=1.0, heartbeat=2.0)
    catalogue.update_job(job_id, status="done", returncode=0, ended=3.0)
    job = Catalogue(tmp_path / "c.sqlite").get_job(job_id)
    assert job["argv"] == ["python", "-m", "x", "--epochs", "3"]
    assert (job["status"], job["pid"], job["returncode"], job["exit_code"]) == ("done", 123, 0, 0)
    assert [j["id"] for j in catalogue.list_jobs(status="done")] == [job_id]
    assert catalogue.get_job(999) is None
    with pytest.raises(CLIPCleanerError, match="colour"):
        catalogue.update_job(job_id, colour="red")


def test_artifact_registry(tmp_path):
    catalogue = Catalogue(tmp_path / "c.sqlite")
    dataset = Dataset(name="d", kind="demo", root=tmp_path, class_names=("a", "b"),
                      labels=np.array([0, 1, 1]), paths=("x", "y", "z"),
                      images=np.zeros((3, 4, 4, 3), np.uint8))
    fp = catalogue.register_dataset(dataset)
    catalogue.register_embedding("k1", dataset_fp=fp, model="pixels", pretrained=None, dim=768,
                                 n=3, path=tmp_path / "e")
    catalogue.register_selection("s1", embedding_key="k1", config={"theta_gmm": 0.5}, path="p")
    assert catalogue.list_datasets()["n"].tolist() == [3]
    assert catalogue.list_embeddings(fp)["key"].tolist() == ["k1"]
    assert catalogue.list_selections("k1")["config"].tolist() == ['{"theta_gmm": 0.5}']


_FULL_AND_READ_ONLY_CHILD = textwrap.dedent("""
    import json, os, subprocess, sys
    from clipcleaner_core.store import Catalogue, CatalogueError
    disk = sys.argv[1]
    db = os.path.join(disk, "catalogue.sqlite")
    out = {}
    catalogue = Catalogue(db)
    catalogue.record_decisions("fp", [(1, "drop", None), (2, "relabel", 3)])
    with open(os.path.join(disk, "filler"), "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(4096))
        except OSError:
            pass
    try:
        for _ in range(100):
            catalogue.record_decisions("fp", [(i, "keep", None) for i in range(1000)])
    except CatalogueError as exc:
        out["full"] = [exc.kind, str(exc)]
    out["while_full"] = catalogue.decisions("fp")["index"].tolist()
    os.remove(os.path.join(disk, "filler"))
    catalogue.record_decisions("fp", [(5, "drop", None)])
    out["after_freeing"] = catalogue.decisions("fp")["index"].tolist()
    subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
    reopened = Catalogue(db)
    out["read_only"] = [reopened.read_only, reopened.decisions("fp")["index"].tolist()]
    try:
        reopened.record_decisions("fp", [(6, "drop", None)])
    except CatalogueError as exc:
        out["write_read_only"] = [exc.kind, str(exc)]
    print(json.dumps(out))
""")


def test_a_full_disk_and_a_read_only_folder_keep_saved_decisions_readable(tmp_path):
    disk = tmp_path / "disk"
    done = small_disk(disk, 512, [sys.executable, "-c", _FULL_AND_READ_ONLY_CHILD, str(disk)])
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    db = disk / "catalogue.sqlite"
    kind, message = out["full"]
    assert kind == "full" and message.startswith(f"could not save 1000 review decision(s) (this batch was "
                                                 f"not saved) in the catalogue {db}")
    assert "is full" in message and "Everything saved before is kept" in message
    assert out["while_full"] == [1, 2]  # saved decisions stay saved and readable on a full disk
    assert out["after_freeing"] == [1, 2, 5]
    assert out["read_only"] == [True, [1, 2, 5]]
    kind, message = out["write_read_only"]
    assert kind == "read-only" and "cannot be written" in message and "Reading still works" in message


def test_a_lock_held_too_long_names_the_file_and_what_to_do(tmp_path, monkeypatch):
    db = tmp_path / "c.sqlite"
    catalogue = Catalogue(db)
    catalogue.record_decisions("fp", [(0, "keep", None)])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(CatalogueError, match=rf"catalogue {db}: database is locked\. Another process") as caught:
            catalogue.record_decisions("fp", [(1, "drop", None)])
        assert caught.value.kind == "locked"
        assert catalogue.decisions("fp")["index"].tolist() == [0]  # reading is not blocked
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    catalogue.record_decisions("fp", [(1, "drop", None)])
    assert catalogue.decisions("fp")["index"].tolist() == [0, 1]


def test_a_damaged_file_is_named_with_the_way_out(tmp_path):
    db = tmp_path / "catalogue.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogueError, match=rf"catalogue {db}: file is not a database\. The file is damaged: "
                                             r"move it aside") as caught:
        Catalogue(db)
    assert caught.value.kind == "damaged" and isinstance(caught.value, CLIPCleanerError)
    assert isinstance(caught.value, sqlite3.Error)  # callers treating the catalogue as optional still can


_DECIDES_FOREVER = textwrap.dedent("""
    import os, sys
    from clipcleaner_core.store import Catalogue
    catalogue = Catalogue(sys.argv[1])
    for batch in range(10_000):
        catalogue.record_decisions("fp", [(i, "relabel", batch) for i in range(200)])
        if batch == 20:
            open(os.environ["PAUSE_MARKER"], "w").close()  # the kill lands during later batches
""")


def test_kill_9_while_saving_decisions_keeps_every_committed_batch_whole(tmp_path):
    from fault_helpers import run_paused

    db = tmp_path / "catalogue.sqlite"
    run_paused(_DECIDES_FOREVER, "after:never:1", tmp_path, str(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        batches = conn.execute("SELECT b.n, COUNT(d.id) FROM decision_batches b LEFT JOIN decisions d "
                               "ON d.batch_id = b.batch_id GROUP BY b.batch_id").fetchall()
    assert len(batches) >= 21 and all(n == count == 200 for n, count in batches)
    latest = Catalogue(db).decisions("fp")
    assert len(latest) == 200 and set(latest["final_label"]) == {len(batches) - 1}
