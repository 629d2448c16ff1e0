"""Run one long core call in a background thread so a page can show progress and a cancel button.

The thread never touches Streamlit: it only writes plain attributes (progress, outcome) that the
page reads on each rerun. Cancelling sets a flag that the core's ``cancel`` callback returns, so
the core stops at its next batch and raises :class:`~clipcleaner_core.errors.Cancelled`.

Tasks that every session shares (the fit of a dataset and encoder) live in :func:`shared`, keyed
by the same string as their result, so two tabs asking for one fit watch the same progress. A key
of work that writes into the cache names the cache folder first (see ``ui.state.cache_root``), so
two cache folders used by one process never share a task.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from clipcleaner_core.errors import Cancelled

#: stage -> (what it is doing, unit of done / total, or None when the counts are not worth showing)
STAGES = {
    "embed": ("Embedding", "images"),
    "text": ("Encoding the prompts", "prompts"),
    "fit": ("Fitting the zero-shot and linear-probe scores", None),
    "probe": ("Fitting the linear probe", "iterations"),
    "folds": ("Fitting the cross-validated probe", "folds"),
    "zero-shot": ("Scoring zero-shot", "samples"),
    "scores": ("Scoring", "samples"),
    "mixtures": ("Fitting the per-class mixtures", "classes"),
    "index": ("Building the nearest-neighbour index", "images"),
    "neighbours": ("Finding each image's nearest neighbours", "images"),
    "index": ("Building the nearest-neighbour index", "rows"),
    "neighbours": ("Finding each sample's nearest neighbours", "rows"),
    "pca": ("Reducing the features for the map (PCA)", "rows"),
    "umap": ("Computing the map (UMAP)", "epochs"),
    "place": ("Placing the other points on the map", "rows"),
    "export": ("Writing the images", "images"),
    "load": ("Reading the dataset", "files"),
    "train": ("Training", "epochs"),
}


@dataclass
class Progress:
    """The latest report of the running work. ``rate`` is units per second (measured when the
    core does not give it)."""

    stage: str = "starting"
    done: int = 0
    total: int = 0
    rate: float | None = None
    elapsed: float = 0.0

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
    _stage_start: tuple[str, float, int] = ("", 0.0, 0)

    def start(self) -> "BackgroundTask":
        self._thread = threading.Thread(target=self._run, name=f"clipcleaner-{self.label}", daemon=True)
        self._thread.start()
        return self

    def _report(self, stage: str, done: int, total: int, rate: float | None = None) -> None:
        now = time.monotonic()
        name, since, done_then = self._stage_start
        if name != stage or done < done_then:
            self._stage_start = (stage, now, int(done))
        elif rate is None and now - since > 0.2 and done > done_then:
            rate = (done - done_then) / (now - since)
        self.progress = Progress(stage=stage, done=int(done), total=int(total), rate=rate,
                                 elapsed=now - self.started)

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


_shared: dict[str, BackgroundTask] = {}
_shared_lock = threading.Lock()


def shared(key: str, work: Callable, *, label: str = "") -> BackgroundTask:
    """The process-wide task for ``key``: the existing one (running or finished), or a new one
    started with ``work``. A finished task stays until :func:`forget`, so every session waiting on
    it sees the outcome."""
    with _shared_lock:
        task = _shared.get(key)
        if task is None:
            task = BackgroundTask(work, label=label).start()
            _shared[key] = task
        return task


def running_shared(key: str) -> BackgroundTask | None:
    with _shared_lock:
        return _shared.get(key)


def running_tasks() -> list[BackgroundTask]:
    """The shared tasks running now."""
    with _shared_lock:
        return [task for task in _shared.values() if task.running]


def forget(key: str, task: BackgroundTask | None = None) -> None:
    """Drop the shared task of ``key`` (only if it is still ``task``, when given)."""
    with _shared_lock:
        if key in _shared and (task is None or _shared[key] is task):
            del _shared[key]


def pending() -> bool:
    """True while a shared task is running."""
    with _shared_lock:
        return any(task.running for task in _shared.values())


def wait_all(timeout: float = 600) -> None:
    """Block until every shared task has ended (tests)."""
    deadline = time.monotonic() + timeout
    for task in list(_shared.values()):
        task.wait(max(0.0, deadline - time.monotonic()))


def describe(progress: Progress) -> str:
    """One line such as ``Embedding 512/1,797 images · 130 images/s · 10 s left``."""
    label, unit = STAGES.get(progress.stage, (None, None))
    if label is None:
        if progress.stage == "starting":
            return "Starting…"
        label, unit = progress.stage.replace("-", " ").capitalize(), "steps"
    text = label
    if unit is not None and progress.total:
        text += f" {progress.done:,}/{progress.total:,} {unit}"
        if progress.rate:
            text += f" · {progress.rate:,.{0 if progress.rate >= 10 else 1}f} {unit}/s"
        left = progress.seconds_left
        if left is not None and progress.done < progress.total:
            text += f" · {_duration(left)} left"
    if progress.elapsed >= 1:
        text += f" · {_duration(progress.elapsed)} so far"
    return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
