"""Opening the app in a fresh Streamlit AppTest session, shared by the page tests.

Every run goes through the router (``app.py``), as in the browser: AppTest would otherwise see the
``pages/`` folder and, from the second run of a session on, run the current page's file alone
(Streamlit's older multipage mode), without the sidebar, the banner or the address handling.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as _app_test

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 180  # the first run in a fresh cache embeds and fits the demo


class _RoutedPagesManager(PagesManager):
    """AppTest's pages manager with the ``pages/`` folder mode off (``st.navigation`` in the
    router turns it off in a real server)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


_app_test.PagesManager = _RoutedPagesManager


def open_app(page: str | None = None, **session_state) -> AppTest:
    """The app, run once on ``page`` (a path under ``pages/``; default: Tune, the start page),
    with ``session_state`` values set before that run. Fails the test if the run raised."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in session_state.items():
        at.session_state[key] = value
    if page is not None:
        at.switch_page(page)
    run_until_ready(at)
    return at


def run_until_ready(at: AppTest, *, query_params: dict | None = None) -> AppTest:
    """Run ``at``; while a fit runs in the background (the page shows its progress), wait for it
    and run again, as the page's own polling would. Fails the test if a run raised."""
    from ui import background

    for name, value in (query_params or {}).items():
        at.query_params[name] = value
    at.run()
    for _ in range(5):
        if not background.pending():
            break
        background.wait_all()
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    """The displayed value of the ``st.metric`` labelled ``label`` (StopIteration if none)."""
    return next(m.value for m in at.metric if m.label == label)


def wait_for(condition: Callable[[], bool], *, timeout: float = 60, what: str = "the condition") -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds): wait on what a
    test needs, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.02)
