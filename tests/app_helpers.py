"""Opening the app in a fresh Streamlit AppTest session, shared by the page tests."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180  # the first run in a fresh cache embeds and fits the demo


def open_app(page: str | None = None, **session_state) -> AppTest:
    """The app, run once on ``page`` (a path under ``pages/``; default: Tune, the start page),
    with ``session_state`` values set before that run. Fails the test if the run raised."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in session_state.items():
        at.session_state[key] = value
    if page is not None:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    """The displayed value of the ``st.metric`` labelled ``label`` (StopIteration if none)."""
    return next(m.value for m in at.metric if m.label == label)
