"""The app's process-wide state: stores keyed by the cache folder, the address that follows every
change, a short fit shown without waiting for the next poll, and the weights look-up that waits
for the fit."""
import sys
import threading

from streamlit.runtime.state import QueryParamsProxy
from streamlit.testing.v1 import AppTest

from app_helpers import metric, open_app
from ui import background, widgets


def _catalogue_and_fit_key():
    import streamlit as st

    from ui import state

    st.text(str(state.catalogue().db_path))
    st.text(state._prepared_key(state.active()))


def test_each_cache_folder_has_its_own_catalogue_and_fit_key(tmp_path, monkeypatch):
    seen = []
    for name in ("first", "second", "first"):
        monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / name))
        at = AppTest.from_function(_catalogue_and_fit_key, default_timeout=120).run()
        seen.append([t.value for t in at.text])
    assert seen[0][0] == str((tmp_path / "first" / "catalogue.sqlite").resolve())
    assert seen[1][0] == str((tmp_path / "second" / "catalogue.sqlite").resolve())
    assert seen[0][1] != seen[1][1] and seen[0] == seen[2]


def test_a_fit_made_for_one_cache_folder_is_not_reused_for_another(tmp_path, monkeypatch):
    kept = metric(open_app(tune_show_map=False), "Kept")  # this test's cache: a copy of the demo's fit
    other = tmp_path / "other-cache"
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(other))
    assert metric(open_app(tune_show_map=False), "Kept") == kept
    assert list((other / "fits").glob("*.npz")), "the second folder got its own fit, on its own disk"


def _move_theta_cons(value):
    import dataclasses

    from ui import state

    state.update(selection=dataclasses.replace(state.active().selection, theta_cons=value))


def test_every_change_is_sent_to_the_address_even_when_the_server_copy_shows_it(monkeypatch):
    """The server's copy is the address the browser reported with the run; after quick key presses
    it can already show the new value while the browser has moved on (the last value must win)."""
    sent = []
    send = QueryParamsProxy.from_dict
    monkeypatch.setattr(QueryParamsProxy, "from_dict",
                        lambda self, params: (sent.append(dict(params)), send(self, params))[1])
    at = AppTest.from_function(_move_theta_cons, args=(0.75,), default_timeout=120)
    at.query_params["cons"] = "0.75"
    at.run()
    assert sent == [{"cons": "0.75"}]
    assert at.query_params["cons"] == "0.75"


def _short_task_page():
    import time

    import streamlit as st

    from ui import background, widgets

    if "task" not in st.session_state:
        st.session_state["runs"] = 0
        st.session_state["task"] = background.BackgroundTask(lambda progress, cancel: time.sleep(0.3) or 42,
                                                              label="short").start()
    st.session_state["runs"] += 1
    task = st.session_state["task"]
    if task.running:
        widgets.task_progress(task, key="short", wait_s=60)
        st.stop()
    st.text(f"result {task.result}")


def test_a_short_task_shows_its_result_in_the_same_visit_not_at_the_next_poll():
    at = AppTest.from_function(_short_task_page, default_timeout=60).run()
    assert not at.exception, at.exception
    assert [t.value for t in at.text] == ["result 42"]
    assert at.session_state["runs"] == 2  # the bar's run, then the page again once the task ended


def test_the_weights_look_up_starts_after_the_running_fit(monkeypatch):
    monkeypatch.delitem(sys.modules, "open_clip", raising=False)  # as on a first launch
    monkeypatch.setattr(background, "_shared", {})
    release = threading.Event()
    fit = background.shared("fit", lambda progress, cancel: release.wait(60), label="fit")
    looked = []
    monkeypatch.setattr(widgets, "_weights_help", lambda model, tag: looked.append((model, tag)) or "missing")
    widgets.check_weights_later()
    check = background.running_shared(widgets.WEIGHTS_CHECK)
    assert check is not None and check.running
    widgets.check_weights_later()  # once per process
    assert background.running_shared(widgets.WEIGHTS_CHECK) is check
    assert not looked, "the look-up (an open_clip import) must not compete with the fit"
    release.set()
    assert fit.wait(60) and check.wait(60)
    assert looked == [widgets.DEFAULT_CLIP] and check.result == "missing"
    assert background.running_tasks() == []
