"""The SQLite catalogue: decisions survive restarts, undo works, concurrent writers are safe."""
import multiprocessing
import threading

import numpy as np
import pytest

from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.store import Catalogue


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
