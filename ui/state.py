"""Streamlit glue shared by every page: the active settings, the URL that mirrors them, and the
cached pipeline stages.

The active settings live in ``st.session_state`` and are mirrored into the address bar
(``st.query_params``) on every change, so a reload, a bookmark or a link sent to a colleague opens
the same view: see :data:`URL_PARAMS`. The expensive stages (dataset, prepared fit) are cached
process-wide under short keys built from content hashes, never by the big arrays themselves; a fit
that is not cached yet runs in a background thread while the page shows its progress.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from clipcleaner_core.data import apply_noise, load_dataset
from clipcleaner_core.data.noise import NoiseSpec, parse_noise_spec
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.errors import Cancelled, CLIPCleanerError, DataError
from clipcleaner_core.paths import cache_dir, paths_outside_roots
from clipcleaner_core.pipeline import Prepared, Result, prepare, select_samples
from clipcleaner_core.presets import PRESETS
from clipcleaner_core.prompts import PromptSet
from clipcleaner_core.scoring import PROBE_MODES, ScoringConfig
from clipcleaner_core.selection import SelectionConfig
from clipcleaner_core.store import Catalogue
from ui import background, neighbours_view

_KEY = "clipcleaner_active"
CUSTOM = "custom"


@dataclass(frozen=True)
class ActiveSettings:
    """What the user has chosen: the dataset, the encoder, the prompts and the thresholds.

    ``preset`` names the paper preset the thresholds came from, or ``"custom"`` once a threshold
    was moved by hand.
    """

    dataset_spec: str = "demo"
    dataset_format: str | None = None
    noise: NoiseSpec | None = None
    encoder: EncoderSpec = field(default_factory=lambda: EncoderSpec(model="pixels"))
    prompts: PromptSet | None = None
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    preset: str = CUSTOM

    def dataset_key(self) -> str:
        noise = None if self.noise is None else dataclasses.asdict(self.noise)
        return json.dumps([self.dataset_spec, self.dataset_format, noise], sort_keys=True)

    def dataset_label(self) -> str:
        """A short name of the dataset for titles: ``demo``, a folder or file name."""
        if self.dataset_spec == "demo":
            return "demo"
        return self.dataset_spec.rstrip("/").rsplit("/", 1)[-1] or self.dataset_spec


def active() -> ActiveSettings:
    if _KEY not in st.session_state:
        st.session_state[_KEY] = ActiveSettings()
    return st.session_state[_KEY]


def update(**changes) -> ActiveSettings:
    """Replace fields of the active settings; dependent stages recompute on next access, and the
    address bar follows."""
    settings = dataclasses.replace(active(), **changes)
    if "selection" in changes and "preset" not in changes and not preset_matches(settings):
        settings = dataclasses.replace(settings, preset=CUSTOM)
    st.session_state[_KEY] = settings
    write_url()
    return settings


def preset_matches(settings: ActiveSettings) -> bool:
    """True when the thresholds are exactly those of ``settings.preset``."""
    values = PRESETS.get(settings.preset)
    return values is not None and all(
        getattr(settings.selection, name) == value if isinstance(value, (str, bool))
        else abs(getattr(settings.selection, name) - value) < 1e-9 for name, value in values.items())


_routing = threading.local()


@contextmanager
def routed():
    """Marks the page run by ``app.py`` (each script run has its own thread)."""
    _routing.active = True
    try:
        yield
    finally:
        _routing.active = False


def ensure_routed() -> None:
    """Make sure a page runs inside the router (app.py), rerunning the app when it does not.

    Streamlit runs a file of the ``pages/`` folder on its own (its older multipage mode) when the
    very first request after a server start opens that page's address, e.g. a bookmark of
    ``/inspect?page=3``. The page would then miss the sidebar and the settings in the address.
    Switching that mode off and rerunning lets ``app.py`` route the same address.
    """
    from streamlit import config
    from streamlit.runtime.pages_manager import PagesManager

    # AppTest re-detects the pages folder before every run, so a rerun would only lose the click
    # that started it; there the page runs as before, and the browser test covers the routing
    if getattr(_routing, "active", False) or config.get_option("global.appTest"):
        return

    PagesManager.uses_pages_directory = False
    st.rerun()


# ---------------------------------------------------------------------------------------------
# The address bar
# ---------------------------------------------------------------------------------------------

SCORE_FIELDS = {"zs_loss": "use_zs_loss", "zs_cons": "use_zs_consistency",
                "lr_loss": "use_lr_loss", "lr_cons": "use_lr_consistency"}
INSPECT_SHOW = ("flagged", "flagged, not reviewed", "reviewed", "all samples")
INSPECT_SORT = ("lowest first", "highest first")
INSPECT_PAGE_SIZES = (12, 24, 48)
INSPECT_DEFAULTS = {"show": INSPECT_SHOW[0], "given": [], "suggested": [], "by": [],
                    "sort": INSPECT_SORT[0], "page": 1, "per_page": 24, "like": None, "q": ""}
#: every view the address may name: the four filters and the neighbour views (a neighbour view
#: the fit does not offer falls back to the first, with a note on the page)
INSPECT_VIEWS = (*INSPECT_SHOW, *neighbours_view.VIEWS)
INSPECT_VIEW = "inspect_view"

#: query parameter -> what it holds. Only values that differ from the defaults are written.
URL_PARAMS = {
    "data": "dataset: 'demo' or a path under the data roots",
    "format": "dataset format: imagefolder, manifest or cifar",
    "noise": "synthetic noise as mode:rate:seed, e.g. sym:0.4:0",
    "model": "encoder: 'pixels' or an open_clip model",
    "pretrained": "the encoder's weights: a pretrained tag or a checkpoint file",
    "probe": "linear probe mode: in-sample, cross-val or off",
    "tau": "zero-shot temperature",
    "zeroshot": "0 turns the zero-shot scores off",
    "gmm": "θ_gmm", "cons": "θ_cons",
    "scores": "the enabled scores: zs_loss, zs_cons, lr_loss, lr_cons (comma-separated)",
    "preset": "the paper preset the thresholds follow",
    "show": "Inspect: which samples", "given": "Inspect: given classes (indices)",
    "suggested": "Inspect: suggested classes (indices)", "by": "Inspect: flagged by (score names)",
    "sort": "Inspect: lowest / highest label score first", "page": "Inspect: page number",
    "per_page": "Inspect: samples per page",
    "like": "Inspect 'more like this': the sample it ranks the dataset by",
    "q": "Inspect 'text search': the description it ranks the dataset by",
    **neighbours_view.URL_PARAMS,
}
DATASET_FORMATS = ("imagefolder", "manifest", "cifar", "embeddings")
INSPECT_PARAMS = ("show", "given", "suggested", "by", "sort", "page", "per_page", "like", "q")


def settings_params(settings: ActiveSettings) -> dict[str, str]:
    """The query parameters that describe ``settings`` (defaults left out)."""
    default = ActiveSettings()
    params: dict[str, str] = {}
    if settings.dataset_spec != default.dataset_spec:
        params["data"] = settings.dataset_spec
    if settings.dataset_format:
        params["format"] = settings.dataset_format
    if settings.noise is not None and settings.noise.mode != "file":
        params["noise"] = f"{settings.noise.mode}:{settings.noise.rate:g}:{settings.noise.seed}"
    if settings.encoder.model != default.encoder.model:
        params["model"] = settings.encoder.model
    if settings.encoder.pretrained:
        params["pretrained"] = settings.encoder.pretrained
    scoring, selection = settings.scoring, settings.selection
    if scoring.probe != default.scoring.probe:
        params["probe"] = scoring.probe
    if scoring.temperature != default.scoring.temperature:
        params["tau"] = f"{scoring.temperature:g}"
    if not scoring.zeroshot:
        params["zeroshot"] = "0"
    if selection.theta_gmm != default.selection.theta_gmm:
        params["gmm"] = f"{selection.theta_gmm:g}"
    if selection.theta_cons != default.selection.theta_cons:
        params["cons"] = f"{selection.theta_cons:g}"
    enabled = [name for name, attr in SCORE_FIELDS.items() if getattr(selection, attr)]
    if len(enabled) != len(SCORE_FIELDS):
        params["scores"] = ",".join(enabled) or "none"
    params.update(neighbours_view.url_params(settings))
    if settings.preset != CUSTOM:
        params["preset"] = settings.preset
    return params


def inspect_params(view: dict) -> dict[str, str]:
    params = {}
    for name in INSPECT_PARAMS:
        value = view.get(name, INSPECT_DEFAULTS[name])
        if name == "show" and value == MAP_SELECTION_SHOW:
            continue  # the map's selection lives in this session only; an address cannot hold it
        if value != INSPECT_DEFAULTS[name]:
            params[name] = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return params


def write_url() -> None:
    """Make the address bar describe the active settings (and the Inspect view on that page).

    The address is sent on every call, not only when the server's copy differs: that copy is the
    address the browser reported when it asked for this run, and after quick changes (several key
    presses on a slider while a rerun is under way) it can already hold a value the browser has
    since left, so a comparison could drop the last change. The browser ignores an address it
    already shows, so a repeated one costs nothing.
    """
    params = settings_params(active())
    if st.session_state.get("current_page") == "Inspect":
        params.update(inspect_params(st.session_state.get(INSPECT_VIEW, {})))
    st.query_params.from_dict(params)


def restore_from_url() -> None:
    """On the first run of a session, take the settings from the address bar.

    Values that cannot be used are ignored and listed in a note (:func:`url_notes`); they never
    stop the page.
    """
    if st.session_state.get("url_restored"):
        return
    st.session_state["url_restored"] = True
    params = {k: st.query_params.get(k) for k in st.query_params}
    if not params:
        return
    settings, view, notes = parse_params(params)
    st.session_state[_KEY] = settings
    st.session_state[INSPECT_VIEW] = view
    st.session_state["url_notes"] = notes


def url_notes() -> list[str]:
    return st.session_state.get("url_notes", [])


def dismiss_url_notes() -> None:
    st.session_state["url_notes"] = []


def parse_params(params: dict[str, str]) -> tuple[ActiveSettings, dict, list[str]]:
    """(settings, Inspect view, notes on ignored parameters) from query parameters."""
    from ui import widgets

    notes: list[str] = []
    settings = ActiveSettings()

    def ignore(name: str, why: str) -> None:
        notes.append(f"`{name}={params[name]}`: {why}")

    for name in params:
        if name not in URL_PARAMS:
            notes.append(f"`{name}`: not a setting of this app (known: {', '.join(URL_PARAMS)})")

    if "data" in params and params["data"] != "demo":
        fmt = params.get("format")
        if fmt is not None and fmt not in DATASET_FORMATS:
            ignore("format", f"not one of {', '.join(DATASET_FORMATS)}")
            fmt = None
        try:
            path = widgets.check_data_path(params["data"], what="dataset path")
            settings = dataclasses.replace(settings, dataset_spec=str(path),
                                           dataset_format=None if fmt == "cifar" else fmt)
        except CLIPCleanerError as exc:
            ignore("data", f"{exc} The demo is shown instead.")
    if "noise" in params:
        try:
            noise = parse_noise_spec(params["noise"])
            if noise is not None and noise.mode == "file":
                raise DataError("noise from a file cannot be given in the address; apply it on the "
                                "Dataset page")
            settings = dataclasses.replace(settings, noise=noise)
        except CLIPCleanerError as exc:
            ignore("noise", str(exc))

    if "model" in params or "pretrained" in params:
        settings = _encoder_from_params(settings, params, ignore)
    settings = _scoring_from_params(settings, params, ignore)
    settings = _selection_from_params(settings, params, ignore)
    return settings, _inspect_from_params(params, ignore), notes


def _encoder_from_params(settings, params, ignore) -> ActiveSettings:
    from ui import widgets

    model = params.get("model", "pixels")
    pretrained = params.get("pretrained") or None
    if model == "pixels":
        return settings
    if pretrained and ("/" in pretrained or pretrained.endswith((".safetensors", ".pt", ".bin"))):
        try:
            pretrained = str(widgets.check_data_path(pretrained, what="checkpoint file"))
        except CLIPCleanerError as exc:
            ignore("pretrained", str(exc))
            return settings
    try:
        spec = EncoderSpec(model=model, pretrained=pretrained)
    except (CLIPCleanerError, ValueError) as exc:
        ignore("model", str(exc))
        return settings
    status = widgets.weights_status(spec.model, spec.pretrained)
    if status.startswith("missing") or status.startswith("unknown"):
        ignore("model", f"the weights of {model} ({pretrained}) are not on this machine ({status}); "
                        "pixel features are used instead. Get them on the Embed page.")
        return settings
    return dataclasses.replace(settings, encoder=spec)


def _scoring_from_params(settings, params, ignore) -> ActiveSettings:
    changes = {}
    if "probe" in params:
        if params["probe"] in PROBE_MODES:
            changes["probe"] = params["probe"]
        else:
            ignore("probe", f"not one of {', '.join(PROBE_MODES)}")
    if "tau" in params:
        tau = _number(params["tau"])
        if tau is not None and 0 < tau <= 100:
            changes["temperature"] = tau
        else:
            ignore("tau", "the temperature must be a number above 0")
    if "zeroshot" in params:
        if params["zeroshot"] in ("0", "1"):
            changes["zeroshot"] = params["zeroshot"] == "1"
        else:
            ignore("zeroshot", "use 0 or 1")
    changes.update(neighbours_view.scoring_from_params(params, ignore))
    if not changes:
        return settings
    try:
        return dataclasses.replace(settings, scoring=dataclasses.replace(settings.scoring, **changes))
    except (CLIPCleanerError, ValueError) as exc:
        ignore(next(iter(p for p in ("probe", "tau", "zeroshot") if p in params)), str(exc))
        return settings


def _selection_from_params(settings, params, ignore) -> ActiveSettings:
    changes, preset = {}, CUSTOM
    if "preset" in params:
        if params["preset"] in PRESETS:
            preset = params["preset"]
            changes.update(PRESETS[preset])
        else:
            ignore("preset", f"not one of {', '.join(PRESETS)}")
    for name, attr in (("gmm", "theta_gmm"), ("cons", "theta_cons")):
        if name in params:
            value = _number(params[name])
            if value is not None and 0.0 <= value <= 1.0:
                changes[attr] = value
            else:
                ignore(name, "a threshold must be a number from 0 to 1")
    if "scores" in params:
        names = [s.strip() for s in params["scores"].split(",") if s.strip() and s.strip() != "none"]
        unknown = [s for s in names if s not in SCORE_FIELDS]
        if unknown:
            ignore("scores", f"unknown score(s) {', '.join(unknown)}; known: {', '.join(SCORE_FIELDS)}")
        else:
            changes.update({attr: name in names for name, attr in SCORE_FIELDS.items()})
    changes.update(neighbours_view.selection_from_params(params, ignore))
    selection = dataclasses.replace(settings.selection, **changes)
    settings = dataclasses.replace(settings, selection=selection, preset=preset)
    if preset != CUSTOM and not preset_matches(settings):
        settings = dataclasses.replace(settings, preset=CUSTOM)
    return settings


def _inspect_from_params(params, ignore) -> dict:
    view = dict(INSPECT_DEFAULTS)
    if "show" in params:
        if params["show"] in INSPECT_VIEWS:
            view["show"] = params["show"]
        else:
            ignore("show", f"not one of {', '.join(INSPECT_VIEWS)}")
    if "like" in params:
        if params["like"].isdecimal():
            view["like"] = int(params["like"])
        else:
            ignore("like", "a sample number is a whole number from 0")
    if "q" in params:
        view["q"] = params["q"].strip()[:neighbours_view.MAX_QUERY_CHARS]
    for name in ("given", "suggested"):
        if name in params:
            values = [v.strip() for v in params[name].split(",") if v.strip()]
            if all(v.isdecimal() for v in values):
                view[name] = [int(v) for v in values]
            else:
                ignore(name, "give class numbers separated by commas, e.g. 0,3")
    if "by" in params:
        view["by"] = [v.strip() for v in params["by"].split(",") if v.strip()]
    if "sort" in params:
        if params["sort"] in INSPECT_SORT:
            view["sort"] = params["sort"]
        else:
            ignore("sort", f"not one of {', '.join(INSPECT_SORT)}")
    if "page" in params:
        if params["page"].isdecimal() and int(params["page"]) >= 1:
            view["page"] = int(params["page"])
        else:
            ignore("page", "a page number is a whole number from 1")
    if "per_page" in params:
        if params["per_page"].isdecimal() and int(params["per_page"]) in INSPECT_PAGE_SIZES:
            view["per_page"] = int(params["per_page"])
        else:
            ignore("per_page", f"not one of {', '.join(map(str, INSPECT_PAGE_SIZES))}")
    return view


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN is not a number here


def inspect_view() -> dict:
    """The Inspect page's filters and page, as restored from the address or last shown."""
    return {**INSPECT_DEFAULTS, **st.session_state.get(INSPECT_VIEW, {})}


def remember_inspect_view(view: dict) -> None:
    st.session_state[INSPECT_VIEW] = {**INSPECT_DEFAULTS, **view}
    write_url()


# ---------------------------------------------------------------------------------------------
# Cached stages
# ---------------------------------------------------------------------------------------------

def cache_root() -> str:
    """The resolved cache folder of this process's environment: the first part of every key of
    the process-wide stores, so two cache folders used in one process (tests, a changed
    ``CLIPCLEANER_CACHE``) never see each other's datasets, fits or catalogue."""
    return str(cache_dir().resolve())


def _load_dataset(key: str, root: str | None = None) -> "object":
    root = cache_root() if root is None else root
    return _DATASETS.get((root, key), lambda: _read_dataset(key))


def _read_dataset(key: str):
    spec, fmt, noise = json.loads(key)
    dataset = load_dataset(spec, format=fmt)
    if dataset.images is None:
        _refuse_files_outside_roots(dataset)
    if noise is not None:
        dataset = apply_noise(dataset, NoiseSpec(**noise))
    return dataset


def _refuse_files_outside_roots(dataset) -> None:
    outside = paths_outside_roots(str(dataset.root / p) for p in dataset.paths)
    if outside:
        listed = "; ".join(f"{file} → {real}" for file, real in outside)
        raise DataError(
            f"dataset {dataset.name}: files lead outside the folders this app may read, through "
            f"symbolic links or absolute paths ({listed}). Add the folder they lead to as a data "
            "root on the Dataset page (under “Folders this app may use”), or remove the links.")


def dataset():
    """The active :class:`~clipcleaner_core.data.dataset.Dataset` (cached)."""
    return _load_dataset(active().dataset_key())


def _prepared_key(settings: ActiveSettings, root: str | None = None) -> str:
    return json.dumps({
        "cache": cache_root() if root is None else root,
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

    def peek(self, key: str):
        """The stored value of ``key``, or None (never computes)."""
        with self._lock:
            return self._touch(key) if key in self._values else None

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


_DATASETS = PreparedStore(entries=8)
"""The process's loaded datasets (stores of our own rather than ``st.cache_resource``: they are
filled from background threads, which have no Streamlit script context)."""
_PREPARED = PreparedStore(entries=4)
"""The process's fitted results: the fit runs in a background thread that reports progress."""


def _prepared_store() -> PreparedStore:
    return _PREPARED


def _compute_prepared(settings: ActiveSettings, progress=None, cancel=None, *, root: str | None = None) -> Prepared:
    """The fit of ``settings`` in the cache folder ``root`` (default: the current one). A background
    fit is given the folder of the session that started it, so it never writes into another."""
    root = cache_root() if root is None else root
    return _prepared_store().get(_prepared_key(settings, root), lambda: prepare(
        _load_dataset(settings.dataset_key(), root), settings.encoder, prompts=settings.prompts,
        scoring=settings.scoring, cache_root=root, progress=progress, cancel=cancel))


def prepared(progress=None, cancel=None) -> Prepared:
    """The active :class:`~clipcleaner_core.pipeline.Prepared` fit, computed here if needed
    (blocking; may raise CLIPCleanerError). Pages use :func:`require_prepared`."""
    return _compute_prepared(active(), progress, cancel)


FIT_CANCELLED = "fit_cancelled_key"
FIT_FIRST_WAIT_S = 3.0
"""How long a page waits in place for a fit it has just started, under a moving bar, before it
shows the fit's progress with Cancel (the demo's first fit takes about a second)."""
FIT_WAIT_S = 1.5
"""How long each run of that progress bar waits for the fit, so the page reruns the moment the fit
ends rather than at the next poll."""


def require_prepared() -> Prepared:
    """The active fit; when it is not ready, draw its progress (with Cancel) and stop the page.

    The fit runs in a background thread shared by every session that asks for it. A fit loaded
    from the disk cache is back within the short first wait, so the page never flashes a bar; a
    short fit (the demo's first) is waited for in place, its bar moving, and the page carries on
    in the same run; a longer one gets a progress bar with Cancel that reruns the page when done.
    """
    settings, root = active(), cache_root()
    key = _prepared_key(settings, root)
    ready = _prepared_store().peek(key)
    if ready is not None:
        return ready
    if st.session_state.get(FIT_CANCELLED) == key:
        st.warning("Fitting was cancelled. Nothing was saved for these settings.", icon=":material/cancel:")
        if st.button("Fit again", type="primary", icon=":material/play_arrow:", key="fit_again"):
            st.session_state.pop(FIT_CANCELLED, None)
            st.rerun()
        st.stop()
    task = background.shared(key, lambda progress, cancel: _compute_prepared(settings, progress, cancel,
                                                                              root=root), label="fit")
    task.wait(0.5)
    if task.running:
        _wait_in_place(task, FIT_FIRST_WAIT_S)
    if not task.running:
        background.forget(key, task)
        if task.cancelled:
            st.session_state[FIT_CANCELLED] = key
            st.rerun()
        if task.error is not None:
            show_error(task.error)
            st.stop()
        return task.result
    from ui import widgets

    st.caption(FIT_CAPTION)
    widgets.task_progress(task, key="fit", wait_s=FIT_WAIT_S)
    st.stop()


FIT_CAPTION = "Embedding the images and fitting the scores for these settings (cached after the first time)."


def _wait_in_place(task: background.BackgroundTask, seconds: float) -> None:
    """Wait up to ``seconds`` for ``task`` under a moving bar that is removed afterwards."""
    from ui import widgets

    slot = st.empty()
    with slot.container():
        st.caption(FIT_CAPTION)
        bar = st.progress(task.progress.fraction, text=background.describe(task.progress))
    widgets.wait_moving(task, bar, seconds)
    slot.empty()


def dataset_fingerprint() -> str:
    """The active dataset's fingerprint (the key of its review decisions); the loaded dataset is
    cached and computes it once."""
    return dataset().fingerprint()


MAP_SELECTION_KEY = "map_selection"
MAP_SELECTION_SHOW = "selected on the map"


def send_map_selection(sample_ids) -> None:
    """Remember the samples selected on the Tune map, for Inspect to show on its next run."""
    st.session_state[MAP_SELECTION_KEY] = {"fingerprint": dataset_fingerprint(),
                                           "ids": [int(i) for i in sample_ids], "requested": True}


def map_selection_requested() -> bool:
    """True once after :func:`send_map_selection`: Inspect then switches its view to the selection.

    The request is a plain session value, not the Inspect widgets' own keys: a widget's value set
    while another page runs is dropped with that page's widgets, and the browser would send the
    widget's previous value back on the next rerun.
    """
    sent = st.session_state.get(MAP_SELECTION_KEY)
    if not sent or not sent.get("requested"):
        return False
    sent["requested"] = False
    return sent.get("fingerprint") == dataset_fingerprint()


def map_selection() -> list[int]:
    """The sample ids sent from the Tune map, or [] when none were sent for the active dataset."""
    sent = st.session_state.get(MAP_SELECTION_KEY)
    if not sent or sent.get("fingerprint") != dataset_fingerprint():
        return []
    return list(sent["ids"])


def result() -> Result:
    """The active selection applied to the prepared fit, with review decisions: milliseconds."""
    prep = require_prepared()
    decisions = catalogue().decisions(dataset_fingerprint())
    return select_samples(prep, active().selection, decisions=decisions)


def catalogue() -> Catalogue:
    """The catalogue of the current cache folder (one per folder, shared by the sessions)."""
    return _catalogue(cache_root())


@st.cache_resource(show_spinner=False)
def _catalogue(root: str) -> Catalogue:
    return Catalogue(Path(root) / "catalogue.sqlite")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

USER_ERRORS = (CLIPCleanerError, ValueError)
"""What a page shows as an error box: the library's errors (ConfigError and DataError are also
ValueErrors) and plain ValueErrors from a bad value typed into a widget."""


def show_error(exc: BaseException) -> None:
    """Show a user-facing error (message only, never a traceback)."""
    if isinstance(exc, Cancelled):
        st.warning(str(exc), icon=":material/cancel:")
    elif isinstance(exc, USER_ERRORS):
        st.error(str(exc), icon=":material/error:")
    else:
        st.error(f"{type(exc).__name__}: {exc}", icon=":material/error:")


@contextmanager
def user_errors(*, stop: bool = False):
    """Show a user error raised inside the block as an error box and carry on after the block
    (or stop the page when ``stop``: for what the rest of the page needs).

        with state.user_errors(stop=True):
            prepared = state.require_prepared()
    """
    try:
        yield
    except USER_ERRORS as exc:
        show_error(exc)
        if stop:
            st.stop()


def sidebar(*, show_selection: bool = True) -> None:
    """The shared sidebar: active dataset, embedding, selection settings and running jobs.

    ``show_selection=False`` on the Tune page, whose sliders show the live values (its panel reruns
    alone, so a sidebar summary there would lag one move behind).
    """
    settings = active()
    with st.sidebar:
        st.caption("Active dataset")
        noise = "" if settings.noise is None else f" + {settings.noise.mode}:{settings.noise.rate:g} noise"
        st.markdown(f"**{settings.dataset_label()}**{noise}")
        st.caption("Encoder")
        if is_embeddings_dataset(settings):  # the features came from elsewhere, not the encoder
            st.markdown("precomputed embeddings")
        else:
            pretrained = f" ({settings.encoder.pretrained})" if settings.encoder.pretrained else ""
            st.markdown(f"`{settings.encoder.model}`{pretrained}")
        if show_selection:
            _selection_summary(settings)
        _running_jobs()


def is_embeddings_dataset(settings: ActiveSettings) -> bool:
    """Whether the active dataset is a precomputed-embeddings folder: asked of its path (a few
    file checks), never by loading it, so a page can say so before anything is loaded."""
    from clipcleaner_core.data import detect_format

    if settings.dataset_format is not None:
        return settings.dataset_format == "embeddings"
    try:
        return detect_format(settings.dataset_spec) == "embeddings"
    except (CLIPCleanerError, OSError, ValueError):  # the Dataset page explains a bad path
        return False


def embeddings_have_text(root: Path) -> bool:
    """Whether a precomputed-embeddings folder brings its prompts' features (zero-shot scores)."""
    return (root / "text_features.npy").is_file() and (root / "text_labels.npy").is_file()


def embeddings_root() -> Path:
    """The folder of the active precomputed-embeddings dataset (its spec when it does not load:
    the Dataset page says what is wrong with it)."""
    try:
        return Path(dataset().root)
    except (CLIPCleanerError, OSError, ValueError):
        return Path(active().dataset_spec)


def _has_text_tower(settings: ActiveSettings) -> bool:
    if is_embeddings_dataset(settings):
        return embeddings_have_text(embeddings_root())
    return settings.encoder.model != "pixels"


def _selection_summary(settings: ActiveSettings) -> None:
    with st.sidebar:
        sel = settings.selection
        zeroshot = settings.scoring.zeroshot and _has_text_tower(settings)
        probe = settings.scoring.probe != "off"
        enabled = [name for name, on in (("zs loss", zeroshot and sel.use_zs_loss),
                                         ("zs cons", zeroshot and sel.use_zs_consistency),
                                         ("lr loss", probe and sel.use_lr_loss),
                                         ("lr cons", probe and sel.use_lr_consistency)) if on]
        nb_names, nb_parts = neighbours_view.summary(sel, fit_has_lemon=zeroshot)
        enabled += nb_names
        st.caption("Selection")
        parts = [f"θ_gmm {sel.theta_gmm:.2f}", f"θ_cons {sel.theta_cons:.2f}", *nb_parts]
        if zeroshot:
            parts.append(f"τ {settings.scoring.temperature:g}")
        preset = "" if settings.preset == CUSTOM else f" ({settings.preset} preset)"
        st.markdown(f"{' · '.join(parts)}{preset}  \n{', '.join(enabled) or 'no scores'}")


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
