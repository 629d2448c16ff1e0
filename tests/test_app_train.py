"""Train page: launch real runs on the demo from the app, watch their curves, compare and cancel them."""
import json
import os
import time

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import TIMEOUT, open_app
from clipcleaner_core.jobs import JobRunner
from clipcleaner_core.store import Catalogue


def open_train_page() -> AppTest:
    return open_app("pages/6_train.py")


def wait_finished(job_id: int, timeout: float = TIMEOUT):
    runner = JobRunner(Catalogue())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.status(job_id)
        if job.finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {runner.tail(job_id)}")


def launch(at: AppTest, *, mode: str, epochs: int, backbone: str = "linear") -> int:
    at.selectbox(key="train_backbone").set_value(backbone).run()
    at.radio(key="train_mode").set_value(mode).run()
    preset = at.selectbox(key="train_preset").value
    at.number_input(key=f"epochs-{preset}-{backbone}").set_value(epochs).run()
    next(b for b in at.button if b.label == "Launch training run").click().run()
    assert not at.exception, at.exception
    return at.session_state["train_job_id"]


def test_page_launches_runs_shows_curves_and_compares_them():
    at = open_train_page()
    assert any("Train" in t.value for t in at.title)

    first = launch(at, mode="mixfix", epochs=3)
    second = launch(at, mode="all", epochs=3)
    assert JobRunner(Catalogue()).status(second).status in ("queued", "starting", "running")

    done = wait_finished(second)
    one = JobRunner(Catalogue()).status(first)
    assert one.status == "done", JobRunner(Catalogue()).tail(first)
    assert done.status == "done", JobRunner(Catalogue()).tail(second)
    assert done.started >= one.ended, "the second run must wait for the first (one device)"
    for job, mode in ((one, "mixfix"), (done, "all")):  # the page hands over one file: the config
        config_path = str(job.run_dir / "config.json")
        assert list(job.argv[-5:]) == ["train", "--config", config_path, "--out", str(job.run_dir)]
        saved = json.loads((job.run_dir / "config.json").read_text())
        assert saved["mode"] == mode and saved["data"] == "demo" and saved["epochs"] == 3
    assert json.loads((one.run_dir / "config.json").read_text())["selection"] == str(one.run_dir / "selection.csv")
    assert (one.run_dir / "selection.csv").exists(), "the run trains on the exported selection"

    at.run()
    assert not at.exception, at.exception
    assert at.get("plotly_chart"), "the current run's loss / accuracy curves are shown"
    tables = [d.value for d in at.dataframe]
    table = next((t for t in tables if "run" in t.columns), None)
    assert table is not None, [list(t.columns) for t in tables]
    assert list(table["run"]) == [second, first]
    assert list(table["dataset"]) == ["demo", "demo"]  # the past runs say what they trained on
    assert list(table["trained on"]) == ["All given labels (baseline)", "CLIPCleaner set + MixFix"]
    assert (table["best test acc"] > 0.3).all()
    assert table["final set size"].iloc[1] < table["final set size"].iloc[0], \
        "the CLIPCleaner set is smaller than all given labels"
    assert at.get("download_button"), "the best checkpoint can be downloaded"


def test_cancel_button_stops_a_running_job():
    at = open_train_page()
    job_id = launch(at, mode="mixfix", epochs=500, backbone="mlp")
    runner = JobRunner(Catalogue())
    deadline = time.monotonic() + TIMEOUT
    while runner.status(job_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    at.run()
    cancel = next(b for b in at.button if b.label == "Cancel run")
    cancel.click().run()
    job = runner.status(job_id)
    assert job.status == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)
