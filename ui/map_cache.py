"""The map of an embedding: a quick PCA layout at once, the UMAP map from a background thread.

The first UMAP map of an embedding takes ~20 s for the demo (numba compilation + the fit) and a
few minutes at 10^6 points. So :func:`map_coords` answers at once: with the cached UMAP map when
there is one, else with the quick layout (the first two principal components, milliseconds) while the UMAP map is
computed in a background thread shared by all sessions. The page says which one it shows, polls
:func:`map_pending`, and redraws when the final map is ready; from then on every call returns the
same cached coordinates. The final map is turned to match the quick layout's orientation, so the
swap keeps clusters roughly in place.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from clipcleaner_core.projection import cached_umap, compute_umap, quick_layout
from ui.background import Progress

log = logging.getLogger(__name__)
STAGES = {"pca": "projecting (PCA)", "umap": "UMAP epochs", "place": "placing the other points", "done": "saving"}


@dataclass(frozen=True)
class MapLayout:
    """What the map draws now.

    ``coords``: (n_valid, 2) float32, one row per row of ``prepared.features``. ``final``: True for
    the (cached) UMAP map, False for the quick PCA layout shown while UMAP runs; ``progress`` is
    then the background computation's latest report (see :func:`progress_text`).
    """

    coords: np.ndarray
    final: bool
    progress: Progress | None = None


@dataclass
class _MapJob:
    future: Future | None = None
    progress: Progress = field(default_factory=Progress)

    def report(self, stage: str, done: int, total: int, rate: float | None = None) -> None:
        self.progress = Progress(stage=stage, done=int(done), total=int(total), rate=rate)


@st.cache_resource(show_spinner=False)
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipcleaner-umap")


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[str, _MapJob]:
    return {}


@st.cache_resource(show_spinner=False)
def _quick_layouts() -> dict[str, np.ndarray]:
    return {}


@st.cache_resource(show_spinner=False)
def _lock() -> threading.Lock:
    return threading.Lock()


def map_key(prepared) -> str:
    """Cache key of the map: the embedding's content key (the decodable rows follow from it)."""
    return f"umap-{prepared.embedding.key}"


def compute_map(prepared, *, cache_root=None, progress=None, cancel=None) -> np.ndarray:
    """The final map exactly as the app computes it (blocking). ``seed=None`` runs UMAP on every
    core: ~1.8x faster on 2 cores than the seeded single-thread run, and computed once per embedding."""
    return compute_umap(prepared.features, cache_key=map_key(prepared), cache_root=cache_root, seed=None,
                        progress=progress, cancel=cancel)


def cached_map(prepared, *, cache_root=None) -> np.ndarray | None:
    """The final map of ``prepared`` if it is on disk already, else None (milliseconds)."""
    return cached_umap(prepared.features, cache_key=map_key(prepared), cache_root=cache_root, seed=None)


def map_coords(prepared, *, wait_s: float = 0.0) -> MapLayout:
    """The map to draw now: the UMAP map when it is on disk or ready within ``wait_s``, else the
    quick layout with the background computation's progress (so a rerun never waits for it).

    On first call per embedding (shared by all sessions) it loads the map from disk, or computes the
    quick layout and starts the UMAP computation in the background. A failed computation raises its
    error once and is retried on the next call.
    """
    key = map_key(prepared)
    with _lock():
        job = _jobs().get(key)
        if job is None:
            job = _MapJob(future=Future())
            cached = cached_map(prepared)
            if cached is not None:
                job.future.set_result(cached)
            else:
                # first, while the interpreter is free: numba's compilation in the thread holds it
                _quick(prepared, key)
                job.future = _executor().submit(compute_map, prepared, progress=job.report)
            _jobs()[key] = job
    try:
        coords = np.asarray(job.future.result(timeout=wait_s))
    except TimeoutError:
        return MapLayout(coords=_quick(prepared, key), final=False, progress=job.progress)
    except Exception:
        with _lock():
            if _jobs().get(key) is job:
                del _jobs()[key]
        raise
    _quick_layouts().pop(key, None)
    return MapLayout(coords=coords, final=True)


def map_pending(prepared) -> bool:
    """True while the UMAP map of ``prepared`` is being computed."""
    job = _jobs().get(map_key(prepared))
    return job is not None and job.future is not None and not job.future.done()


def progress_text(progress: Progress | None) -> str:
    """One line for the page: what the background map computation is doing, and the time left."""
    if progress is None or progress.stage == "starting":
        return "starting UMAP (the first map in a new app process compiles its code: 10-30 s)"
    text = STAGES.get(progress.stage, progress.stage)
    if progress.total:
        text += f" {progress.done:,} / {progress.total:,}"
    if progress.seconds_left is not None:
        text += f", about {progress.seconds_left:,.0f} s left"
    return text


def _quick(prepared, key: str) -> np.ndarray:
    """The quick layout of ``prepared``, computed once per embedding while its UMAP map is pending."""
    layouts = _quick_layouts()
    coords = layouts.get(key)
    if coords is None:
        coords = quick_layout(prepared.features, seed=None)
        layouts[key] = coords
    return coords


def map_progress(prepared) -> Progress | None:
    """The latest progress report of the UMAP map being computed for ``prepared``, or None."""
    job = _jobs().get(map_key(prepared))
    return job.progress if job is not None and job.future is not None and not job.future.done() else None
