"""Streamlit glue shared by every page: the active settings and cached pipeline stages.

The active settings live in ``st.session_state``; the expensive stages (dataset, prepared fit) are
``st.cache_resource`` entries keyed by short strings built from content hashes, never by the big
arrays themselves. Applying thresholds is cheap and recomputed on every rerun.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field

import streamlit as st

from clipcleaner_core.data import apply_noise, load_dataset
from clipcleaner_core.data.noise import NoiseSpec
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.pipeline import Prepared, Result, prepare, select_samples
from clipcleaner_core.prompts import PromptSet
from clipcleaner_core.scoring import ScoringConfig
from clipcleaner_core.selection import SelectionConfig
from clipcleaner_core.store import Catalogue

_KEY = "clipcleaner_active"


@dataclass(frozen=True)
class ActiveSettings:
    """What the user has chosen: the dataset, the encoder, the prompts and the thresholds."""

    dataset_spec: str = "demo"
    dataset_format: str | None = None
    noise: NoiseSpec | None = None
    encoder: EncoderSpec = field(default_factory=lambda: EncoderSpec(model="pixels"))
    prompts: PromptSet | None = None
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def dataset_key(self) -> str:
        noise = None if self.noise is None else dataclasses.asdict(self.noise)
        return json.dumps([self.dataset_spec, self.dataset_format, noise], sort_keys=True)


def active() -> ActiveSettings:
    if _KEY not in st.session_state:
        st.session_state[_KEY] = ActiveSettings()
    return st.session_state[_KEY]


def update(**changes) -> ActiveSettings:
    """Replace fields of the active settings; dependent stages recompute on next access."""
    settings = dataclasses.replace(active(), **changes)
    st.session_state[_KEY] = settings
    return settings


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_dataset(key: str) -> "object":
    spec, fmt, noise = json.loads(key)
    dataset = load_dataset(spec, format=fmt)
    if noise is not None:
        dataset = apply_noise(dataset, NoiseSpec(**noise))
    return dataset


def dataset():
    """The active :class:`~clipcleaner_core.data.dataset.Dataset` (cached)."""
    return _load_dataset(active().dataset_key())


def _prepared_key(settings: ActiveSettings) -> str:
    return json.dumps({
        "dataset": settings.dataset_key(),
        "encoder": dataclasses.asdict(settings.encoder),
        "prompts": settings.prompts.fingerprint() if settings.prompts else None,
        "scoring": dataclasses.asdict(settings.scoring),
    }, sort_keys=True)


class PreparedStore:
    """Process-wide {key: value} of the most recent ``entries`` fits, computed once per key.

    Each key has its own lock: sessions asking for the same fit wait for one computation, while a
    session asking for another fit (another dataset, encoder or temperature) does not wait for it.
    A computation that raises stores nothing; the next caller tries again.
    """

    def __init__(self, entries: int = 4) -> None:
        self.entries = entries
        self._values: dict = {}  # most recently used last
        self._computing: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: str, compute):
        with self._lock:
            if key in self._values:
                return self._touch(key)
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:  # computed by another session while this one waited
                    return self._touch(key)
            value = compute()
            with self._lock:
                self._values[key] = value
                self._computing.pop(key, None)
                while len(self._values) > self.entries:
                    self._values.pop(next(iter(self._values)))
            return value

    def _touch(self, key):
        self._values[key] = self._values.pop(key)
        return self._values[key]


@st.cache_resource(show_spinner=False)
def _prepared_store() -> PreparedStore:
    """The process's fitted results.

    A store of our own rather than ``st.cache_resource`` on the computation itself: the progress
    callback draws into the caller's progress bar, and Streamlit cannot replay such elements on a
    cache hit.
    """
    return PreparedStore()


def prepared(progress=None, cancel=None) -> Prepared:
    """The active :class:`~clipcleaner_core.pipeline.Prepared` fit (cached; may raise CLIPCleanerError)."""
    settings = active()
    return _prepared_store().get(_prepared_key(settings), lambda: prepare(
        _load_dataset(settings.dataset_key()), settings.encoder, prompts=settings.prompts,
        scoring=settings.scoring, progress=progress, cancel=cancel))


def dataset_fingerprint() -> str:
    """The active dataset's fingerprint (the key of its review decisions); the loaded dataset is
    cached and computes it once."""
    return dataset().fingerprint()


MAP_SELECTION_KEY = "map_selection"
MAP_SELECTION_SHOW = "selected on the map"


def send_map_selection(sample_ids) -> None:
    """Remember the samples selected on the Tune map, for Inspect to show."""
    st.session_state[MAP_SELECTION_KEY] = {"fingerprint": dataset_fingerprint(),
                                           "ids": [int(i) for i in sample_ids]}


def map_selection() -> list[int]:
    """The sample ids sent from the Tune map, or [] when none were sent for the active dataset."""
    sent = st.session_state.get(MAP_SELECTION_KEY)
    if not sent or sent.get("fingerprint") != dataset_fingerprint():
        return []
    return list(sent["ids"])


def result() -> Result:
    """The active selection applied to the prepared fit, with review decisions: milliseconds."""
    prep = prepared()
    decisions = catalogue().decisions(dataset_fingerprint())
    return select_samples(prep, active().selection, decisions=decisions)


@st.cache_resource(show_spinner=False)
def catalogue() -> Catalogue:
    return Catalogue()


def show_error(exc: BaseException) -> None:
    """Show a user-facing error (message only, never a traceback)."""
    if isinstance(exc, CLIPCleanerError):
        st.error(str(exc), icon=":material/error:")
    else:
        st.error(f"{type(exc).__name__}: {exc}", icon=":material/error:")


def sidebar(*, show_selection: bool = True) -> None:
    """The shared sidebar: active dataset, embedding, selection settings and running jobs.

    ``show_selection=False`` on the Tune page, whose sliders show the live values (its panel reruns
    alone, so a sidebar summary there would lag one move behind).
    """
    settings = active()
    with st.sidebar:
        st.caption("Active dataset")
        noise = "" if settings.noise is None else f" + {settings.noise.mode}:{settings.noise.rate:g} noise"
        st.markdown(f"**{settings.dataset_spec}**{noise}")
        st.caption("Encoder")
        pretrained = f" ({settings.encoder.pretrained})" if settings.encoder.pretrained else ""
        st.markdown(f"`{settings.encoder.model}`{pretrained}")
        if show_selection:
            _selection_summary(settings)
        _running_jobs()


def _selection_summary(settings: ActiveSettings) -> None:
    with st.sidebar:
        sel = settings.selection
        zeroshot = settings.encoder.model != "pixels" and settings.scoring.zeroshot
        probe = settings.scoring.probe != "off"
        enabled = [name for name, on in (("zs loss", zeroshot and sel.use_zs_loss),
                                         ("zs cons", zeroshot and sel.use_zs_consistency),
                                         ("lr loss", probe and sel.use_lr_loss),
                                         ("lr cons", probe and sel.use_lr_consistency)) if on]
        st.caption("Selection")
        st.markdown(f"θ_gmm {sel.theta_gmm:.2f} · θ_cons {sel.theta_cons:.2f} · τ "
                    f"{settings.scoring.temperature:g}  \n{', '.join(enabled) or 'no scores'}")


def _running_jobs() -> None:
    try:
        jobs = catalogue().list_jobs()
    except Exception:  # the jobs table is optional for the sidebar
        return
    if jobs is None or len(jobs) == 0:
        return
    rows = jobs.to_dict("records") if hasattr(jobs, "to_dict") else list(jobs)
    running = [j for j in rows if j.get("status") in ("queued", "starting", "running", "cancelling")]
    if running:
        st.caption("Jobs")
        for job in running:
            st.markdown(f"{job.get('status')}: job {job.get('id')} ({job.get('kind', '')})")
