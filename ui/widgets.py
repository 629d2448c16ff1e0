"""Streamlit widgets shared by the pages: image grids, class-count charts, data-root path inputs.

Widgets only draw; they take core objects (a ``Dataset``, arrays, DataFrames) and never compute
scores. Thumbnails are cached by the dataset's fingerprint and the sample index, never by pixels.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.errors import CLIPCleanerError, DataError
from clipcleaner_core.paths import data_roots

THUMB_PX = 96
"""Edge of a grid thumbnail in pixels; small images (32 px CIFAR / demo) are upscaled crisply."""

# ---------------------------------------------------------------------------------------------
# Thumbnails and image grids
# ---------------------------------------------------------------------------------------------

@st.cache_data(max_entries=4096, show_spinner=False)
def _file_thumbnail(path: str, mtime_ns: int, px: int) -> tuple[np.ndarray | None, str | None]:
    """(thumbnail pixels, None) or (None, reason) for an image file; keyed by path and mtime."""
    from clipcleaner_core.data.images import load_image

    try:
        image = load_image(path)
    except CLIPCleanerError as exc:
        return None, getattr(exc, "reason", str(exc))
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    image.thumbnail((px, px), Image.Resampling.BILINEAR)
    return np.asarray(image), None


def thumbnail(dataset: Dataset, index: int, *, px: int = THUMB_PX) -> tuple[np.ndarray | None, str | None]:
    """Pixels of sample ``index`` scaled to at most ``px`` (upscaled if smaller), or (None, reason)."""
    if dataset.images is not None:
        pixels = np.asarray(dataset.images[index])
        image = Image.fromarray(pixels)
        scale = max(1, px // max(image.size))
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        elif max(image.size) > px:
            image.thumbnail((px, px), Image.Resampling.BILINEAR)
        return np.asarray(image), None
    path = dataset.abspath(index)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        return None, exc.strerror or "missing file"
    return _file_thumbnail(str(path), mtime, px)


def _placeholder(px: int) -> np.ndarray:
    tile = np.full((px, px, 3), 235, dtype=np.uint8)
    tile[px // 2 - 1: px // 2 + 1, :, :] = 200
    return tile


def image_grid(
    dataset: Dataset,
    indices: Sequence[int] | np.ndarray,
    captions: Sequence[str] | None = None,
    *,
    columns: int = 8,
    max_images: int = 64,
    px: int = THUMB_PX,
    empty_message: str = "No samples to show.",
) -> list[int]:
    """Draw samples ``indices`` of ``dataset`` as a grid of thumbnails with one caption each.

    Args:
        dataset: the dataset the indices refer to (in-memory pixels or files under ``root``).
        indices: dataset indices to show, in order; only the first ``max_images`` are drawn.
        captions: one caption per index (defaults to ``"#<index> <class name>"``).
        columns: thumbnails per row.
        max_images: cap on thumbnails drawn (a caption says how many were left out).
        px: thumbnail edge in pixels.
        empty_message: shown instead of a grid when ``indices`` is empty.

    Returns:
        The indices actually drawn. A file that cannot be decoded is drawn as a grey tile whose
        caption gives the reason, never an exception.
    """
    indices = [int(i) for i in np.asarray(indices).ravel()]
    if captions is not None and len(captions) != len(indices):
        raise ValueError(f"image_grid: {len(captions)} captions for {len(indices)} indices")
    if not indices:
        st.caption(empty_message)
        return []
    shown = indices[:max_images]
    if captions is None:
        labels = [f"#{i} {dataset.class_names[dataset.labels[i]]}" for i in shown]
    else:
        labels = [str(c) for c in captions[:max_images]]
    columns = max(1, int(columns))
    for start in range(0, len(shown), columns):
        cells = st.columns(columns)
        for cell, index, caption in zip(cells, shown[start:start + columns], labels[start:start + columns]):
            pixels, reason = thumbnail(dataset, index, px=px)
            with cell:
                if pixels is None:
                    st.image(_placeholder(px), caption=f"{caption} (unreadable: {reason})")
                else:
                    st.image(pixels, caption=caption)
    if len(indices) > len(shown):
        st.caption(f"Showing {len(shown)} of {len(indices)} samples.")
    return shown


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------

def class_counts_figure(
    class_names: Sequence[str],
    counts: np.ndarray,
    *,
    true_counts: np.ndarray | None = None,
    title: str = "Samples per class",
) -> go.Figure:
    """Bar chart of given-label counts per class, with true-label counts beside them when known."""
    names = [str(c) for c in class_names]
    fig = go.Figure()
    fig.add_bar(x=names, y=np.asarray(counts).tolist(), name="given label")
    if true_counts is not None:
        fig.add_bar(x=names, y=np.asarray(true_counts).tolist(), name="true label", opacity=0.6)
    fig.update_layout(
        title=title, barmode="group", height=320, margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title="class", yaxis_title="samples", xaxis_type="category",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
    )
    return fig


def class_counts_table(dataset: Dataset) -> pd.DataFrame:
    """One row per class: given count, and true count / flipped count when truth is known."""
    table = pd.DataFrame({"class": list(dataset.class_names), "given": dataset.class_counts()})
    if dataset.true_labels is not None:
        table["true"] = np.bincount(dataset.true_labels, minlength=dataset.num_classes)
        noisy = dataset.labels != dataset.true_labels
        table["wrong labels"] = np.bincount(dataset.labels[noisy], minlength=dataset.num_classes)
    return table


# ---------------------------------------------------------------------------------------------
# Paths typed into the app
# ---------------------------------------------------------------------------------------------

def check_data_path(text: str, *, must_exist: bool = True, what: str = "path") -> Path:
    """Resolve a path typed into the app (symbolic links followed) and require it to lie under one
    of the data roots.

    The app, unlike the command line, may be reached from a browser, so it only reads and writes
    under ``clipcleaner_core.paths.data_roots()``.

    Raises:
        DataError: empty text, a path outside every data root (naming the roots and how to add
            one), or a missing path when ``must_exist``.
    """
    text = (text or "").strip()
    if not text:
        raise DataError(f"enter a {what}")
    path = Path(text).expanduser().resolve()
    roots = data_roots()
    if not any(path.is_relative_to(root) for root in roots):
        listed = ", ".join(str(r) for r in roots) or "(none)"
        raise DataError(
            f"{what} {path} is outside the folders this app may use ({listed}). Move the data under "
            "one of them, or add its folder under “Folders this app may use” on the Dataset page."
        )
    if must_exist and not path.exists():
        raise DataError(f"{what} {path} does not exist; check the spelling")
    return path


def data_roots_caption() -> str:
    roots = ", ".join(f"`{r}`" for r in data_roots())
    return f"Allowed folders: {roots} (add one on the Dataset page)."


# ---------------------------------------------------------------------------------------------
# Progress of background work
# ---------------------------------------------------------------------------------------------

@st.fragment(run_every=2)
def task_progress(task, *, key: str, on_cancel_text: str = "Stopping at the next step…",
                  wait_s: float = 0.0) -> None:
    """A moving progress bar for a :class:`ui.background.BackgroundTask`, with a Cancel button.

    Reruns every two seconds (each rerun of a fragment costs the work it watches: at 0.5 s the
    demo's first embedding ran several times slower on a loaded 2-core machine); when the task
    ends the whole page reruns to show its outcome. With ``wait_s`` (only where the bar is the
    last thing on the page) each run also waits up to that long for the task, moving the bar
    in place, and reruns the page the moment the task ends rather than at the next poll: a short
    fit shows its result at once. The bar is redrawn every 0.25 s of that wait, which is where
    Streamlit stops the run for a waiting click, so Cancel is not held up by the wait.
    """
    from ui import background

    if not task.running:
        st.rerun(scope="app")
    progress = task.progress
    bar = st.progress(progress.fraction, text=background.describe(progress))
    if task.cancel_requested:
        st.caption(on_cancel_text)
    elif st.button("Cancel", icon=":material/stop:", key=f"{key}_cancel"):
        task.cancel()
    wait_moving(task, bar, wait_s)
    if wait_s and not task.running:
        st.rerun(scope="app")


# ---------------------------------------------------------------------------------------------
# Encoder and weights
# ---------------------------------------------------------------------------------------------

DEFAULT_CLIP = ("ViT-B-32", "openai")
"""The CLIP model the banner suggests when the app runs on pixel features."""
WEIGHTS_CHECK = "weights-check"
"""Key of the background task that looks for the default CLIP weights (see :func:`check_weights_later`)."""


@st.cache_data(ttl=30, show_spinner=False)
def weights_status(model: str, pretrained: str | None) -> str:
    """``encoders.weights_status`` cached briefly (it only looks at local files)."""
    from clipcleaner_core.encoders import weights_status as status

    return status(model, pretrained)


@st.cache_data(ttl=30, show_spinner=False)
def weights_help(model: str, pretrained: str | None) -> str | None:
    """The WeightsUnavailableError text saying how to get the weights, or None when they are here."""
    return _weights_help(model, pretrained)


def _weights_help(model: str, pretrained: str | None) -> str | None:
    from clipcleaner_core.errors import WeightsUnavailableError
    from clipcleaner_core.weights import resolve_weights

    if model == "pixels":
        return None
    try:
        resolve_weights(model, pretrained, allow_download=False)
    except WeightsUnavailableError as exc:
        return str(exc)
    except CLIPCleanerError as exc:
        return str(exc)
    return None


def check_weights_later() -> None:
    """Look for the default CLIP weights in a background thread, once per process, after the fits
    running now (the router calls this once the page has started its work).

    The look-up imports open_clip (with torchvision and timm: seconds on 2 cores), which the demo's
    pixel features never need; on a first launch it would otherwise delay the first counts.
    """
    from ui import background

    if "open_clip" in sys.modules or background.running_shared(WEIGHTS_CHECK) is not None:
        return
    earlier = background.running_tasks()
    model, tag = DEFAULT_CLIP

    def work(progress, cancel):
        for task in earlier:
            task.wait()
        return _weights_help(model, tag)

    background.shared(WEIGHTS_CHECK, work, label="weights")


@st.fragment(run_every=1)
def _until_weights_checked() -> None:
    """The banner's one line while the weights are looked for; the page reruns when they are known."""
    from ui import background

    task = background.running_shared(WEIGHTS_CHECK)
    if task is not None and not task.running:
        st.rerun(scope="app")
    st.caption(":material/memory: Encoder: **pixel features** (looking for CLIP weights on this machine…)")


def wait_moving(task, bar, seconds: float) -> None:
    """Wait up to ``seconds`` for ``task``, redrawing the progress ``bar`` every 0.25 s.

    Every redraw is also where Streamlit takes a waiting click (Cancel, another page): sent each
    0.25 s, a click is answered at once instead of when the wait ends.
    """
    from ui import background

    deadline = time.monotonic() + seconds
    while task.running and time.monotonic() < deadline:
        task.wait(min(0.25, max(0.0, deadline - time.monotonic())))
        bar.progress(task.progress.fraction, text=background.describe(task.progress))


def _precomputed_banner() -> None:
    """The banner of a precomputed-embeddings dataset: its features came from elsewhere."""
    from ui import state

    root = state.embeddings_root()
    zero_shot = ("zero-shot scores from its text_features.npy" if state.embeddings_have_text(root) else
                 "zero-shot scores off: add text_features.npy and text_labels.npy (the prompts' "
                 "features from the same CLIP model) to that folder to turn them on")
    st.caption(f":material/memory: Encoder: **precomputed embeddings** in `{root}` ({zero_shot}).")


def encoder_banner() -> None:
    """One line saying which encoder scores the data, and how to get CLIP weights when missing.

    With pixel features, the weights are looked for in the background (:func:`check_weights_later`)
    until open_clip is loaded; the banner says so meanwhile.
    """
    from ui import background, state

    if state.is_embeddings_dataset(state.active()):
        _precomputed_banner()
        return
    encoder = state.active().encoder
    if encoder.model != "pixels":
        tag = f" · {encoder.pretrained}" if encoder.pretrained else ""
        st.caption(f":material/memory: Encoder: **{encoder.model}**{tag} "
                   f"({weights_status(encoder.model, encoder.pretrained)})")
        return
    if st.session_state.get("hide_weights_help"):
        st.caption(":material/memory: Encoder: **pixel features** (no CLIP weights on this machine; "
                   "zero-shot scores off). The Embed page says how to get them.")
        return
    check = background.running_shared(WEIGHTS_CHECK)
    if "open_clip" not in sys.modules and (check is None or check.running):
        _until_weights_checked()
        return
    model, tag = DEFAULT_CLIP
    missing = weights_help(model, tag)
    if missing is None:
        st.info(f"Encoder: **pixel features**. CLIP {model} ({tag}) weights are on this machine: "
                "pick them on the Embed page for zero-shot scores.", icon=":material/memory:")
        return
    left, right = st.columns([6, 1], vertical_alignment="center")
    left.info(f"**Encoder: pixel features.** CLIP {model} ({tag}) weights are not on this machine, "
              "so the scores use raw pixels and zero-shot scores are off.", icon=":material/memory:")
    right.button("Hide this", key="hide_weights_help_button", type="tertiary",
                 on_click=st.session_state.update, kwargs={"hide_weights_help": True})
    with left.expander("How to get CLIP weights"):
        st.markdown(f"{missing}\n\nThen pick the model on the Embed page (or give a local "
                    "checkpoint path there).")


def url_notes() -> None:
    """A note listing the address-bar settings that could not be used (until dismissed)."""
    from ui import state

    notes = state.url_notes()
    if not notes:
        return
    left, right = st.columns([8, 1], vertical_alignment="center")
    left.warning("Some settings in the address were ignored:\n\n" + "\n".join(f"- {n}" for n in notes),
                 icon=":material/link_off:")
    right.button("Dismiss", key="dismiss_url_notes", type="tertiary", on_click=state.dismiss_url_notes)
