"""Run one long core call in a background thread so a page can show progress and a cancel button.

The thread never touches Streamlit: it only writes plain attributes (progress, outcome) that the
page reads on each rerun. Cancelling sets a flag that the core's ``cancel`` callback returns, so
the core stops at its next batch and raises :class:`~clipcleaner_core.errors.Cancelled`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from clipcleaner_core.errors import Cancelled


@dataclass
class Progress:
    """The latest report of the running work."""

    stage: str = "starting"
    done: int = 0
    total: int = 0
    rate: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def seconds_left(self) -> float | None:
        if not self.rate or not self.total:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


@dataclass
class BackgroundTask:
    """``work(progress, cancel)`` running in a daemon thread.

    ``progress(stage, done, total, rate)`` and ``cancel() -> bool`` are the callbacks the core
    expects. After the thread ends, exactly one of ``result``, ``error`` is set, or ``cancelled``.
    """

    work: Callable[[Callable, Callable[[], bool]], Any]
    label: str = ""
    progress: Progress = field(default_factory=Progress)
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "BackgroundTask":
        self._thread = threading.Thread(target=self._run, name=f"clipcleaner-{self.label}", daemon=True)
        self._thread.start()
        return self

    def _report(self, stage: str, done: int, total: int, rate: float | None = None) -> None:
        self.progress = Progress(stage=stage, done=int(done), total=int(total), rate=rate)

    def _run(self) -> None:
        try:
            self.result = self.work(self._report, self._cancel.is_set)
        except Cancelled:
            self.cancelled = True
        except BaseException as exc:  # handed to the page, which shows it
            self.error = exc

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread ends (tests); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


def describe(progress: Progress) -> str:
    """One line such as ``embed 512/1,797 images · 130 images/s · 10 s left``."""
    if progress.stage == "embed" and progress.total:
        text = f"Embedding {progress.done:,}/{progress.total:,} images"
        if progress.rate:
            text += f" · {progress.rate:,.0f} images/s"
        left = progress.seconds_left
        if left is not None and progress.done < progress.total:
            text += f" · {_duration(left)} left"
        return text
    if progress.stage == "text":
        return f"Encoding {progress.total:,} prompts"
    if progress.stage == "fit":
        return "Fitting the zero-shot and linear-probe scores"
    return "Starting…"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
