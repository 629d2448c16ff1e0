"""The one progress convention of the core, as in fiftyone-brain: a callback, never a UI.

``progress(stage, done, total, rate)``: ``stage`` names the work ("embed", "probe", "scores",
"mixtures", "umap", "export", ...), ``done`` of ``total`` units are finished (``done`` never
decreases within a stage), and ``rate`` is units per second or None when unknown. ``cancel()``
returning True asks long work to stop at its next check, which raises
:class:`~clipcleaner_core.errors.Cancelled`.
"""
from __future__ import annotations

import time
from typing import Callable

from .errors import Cancelled

Progress = Callable[[str, int, int, "float | None"], None]
Cancel = Callable[[], bool]


def notify(progress: Progress | None, stage: str, done: int, total: int,
           rate: float | None = None) -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(stage, done, total, rate)


def check_cancel(cancel: Cancel | None, what: str) -> None:
    """Raise :class:`Cancelled` ("``what`` cancelled") when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled")


class RateMeter:
    """Units per second since construction, for the ``rate`` argument."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def rate(self, done: int) -> float | None:
        elapsed = time.perf_counter() - self._start
        return done / elapsed if elapsed > 0 and done > 0 else None
