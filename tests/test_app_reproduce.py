"""The Train page's "Reproduce the paper" section: shows the preset, launches the command as a job."""
import time

from streamlit.testing.v1 import AppTest

import paper_layouts


def _panel():
    from clipcleaner_core.jobs import JobRunner
    from clipcleaner_core.store import Catalogue
    from ui.reproduce_panel import reproduce_panel

    reproduce_panel(lambda: JobRunner(Catalogue()))


def test_panel_shows_the_preset_and_launches_reproduce_as_a_job(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    root = paper_layouts.animal10n(tmp_path / "ANIMAL-10N", per_class=(1, 1))
    at = AppTest.from_function(_panel, default_timeout=60).run()
    assert not at.exception, at.exception
    at.selectbox(key="reproduce_dataset").set_value("webvision").run()
    preset = at.dataframe[0].value.iloc[0]
    assert preset["preset"] == "webvision" and preset["θ_cons"] == 1.0 and "81.6" in preset["paper's top-1 (%)"]
    assert not [b for b in at.button if b.label == "Run the paper's recipe"], "no folder given yet"

    at.selectbox(key="reproduce_dataset").set_value("cifar100").run()
    at.text_input(key="reproduce_noise_cifar100").set_value("bad").run()
    assert any("sym:RATE" in e.value for e in at.error)

    at.selectbox(key="reproduce_dataset").set_value("animal10n").run()
    at.text_input(key="reproduce_root").set_value(str(root)).run()
    next(b for b in at.button if b.label == "Run the paper's recipe").click().run()
    assert not at.exception, at.exception
    from clipcleaner_core.jobs import JobRunner
    from clipcleaner_core.store import Catalogue

    runner = JobRunner(Catalogue())
    job = runner.status(at.session_state["reproduce_job_id"])
    assert job.kind == "reproduce" and list(job.argv[-4:]) == ["--gpus", "1", "--out", str(job.run_dir)]
    assert job.argv[job.argv.index("--root") + 1] == str(root)
    deadline = time.monotonic() + 60
    while not runner.status(job.id).finished and time.monotonic() < deadline:
        time.sleep(0.2)
    # no ViT-B-32 weights on a test machine: the job ends at once with the weights message
    assert runner.status(job.id).status == "failed"
    at.run()
    assert "Weights for ViT-B-32" in runner.tail(job.id) and not at.exception


def test_a_folder_outside_the_data_roots_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    at = AppTest.from_function(_panel, default_timeout=60).run()
    at.text_input(key="reproduce_root").set_value("/").run()
    assert any("outside the folders" in e.value for e in at.error)
