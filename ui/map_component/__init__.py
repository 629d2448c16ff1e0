"""The Tune page's UMAP map as a small Streamlit component that recolours its points in place.

``st.plotly_chart`` derives its element id from the figure, so every threshold move remounted the
chart and redrew 50,000 WebGL points from scratch (1.6–2.2 s in a browser). This component is keyed:
its iframe stays mounted, receives each run's arguments by message, and only restyles the colours
and legend counts unless the coordinates themselves changed (see ``index.html`` beside this file).

Plotly.js comes from the installed plotly package: :func:`materialise` writes ``index.html`` and
links or copies ``plotly.min.js`` into ``<cache>/components/umap_map/``, so no copy lives in git and
nothing is fetched from the network. When that folder cannot be written, :func:`umap_map` returns
None and the page falls back to ``st.plotly_chart``.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ui.plots import STATUS_COLOURS

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "index.html"
CATEGORIES = tuple(STATUS_COLOURS)  # status code k = CATEGORIES[k]
NAME = "umap_map"


def plotly_js() -> Path:
    """``plotly.min.js`` shipped inside the installed plotly Python package."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}; reinstall the plotly package")
    return path


def materialise(root: str | os.PathLike | None = None) -> Path:
    """The component folder ``<root>/components/umap_map`` (root defaults to the cache), made ready.

    Writes ``index.html`` from the template and hard-links (else copies) plotly.min.js, each only
    when missing or different, so calling it again is cheap and leaves the files untouched.
    Raises OSError when the folder cannot be written.
    """
    if root is None:
        from clipcleaner_core.paths import cache_dir

        root = cache_dir()
    folder = Path(root) / "components" / NAME
    folder.mkdir(parents=True, exist_ok=True)
    html = TEMPLATE.read_bytes()
    index = folder / "index.html"
    if not index.is_file() or index.read_bytes() != html:
        _replace(index, lambda tmp: tmp.write_bytes(html))
    source, target = plotly_js(), folder / "plotly.min.js"
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        _replace(target, lambda tmp: _link_or_copy(source, tmp))
    return folder


def _replace(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def status_codes(clean_mask: np.ndarray, is_noisy: np.ndarray | None = None) -> np.ndarray:
    """(N,) uint8 index into :data:`CATEGORIES`: kept / flagged, split by the truth when known."""
    clean = np.asarray(clean_mask, dtype=bool)
    codes = np.where(clean, 0, 1).astype(np.uint8)
    if is_noisy is not None:
        noisy = np.asarray(is_noisy, dtype=bool)
        codes[clean & noisy] = CATEGORIES.index("kept · truly noisy")
        codes[~clean & noisy] = CATEGORIES.index("flagged · truly noisy")
        codes[~clean & ~noisy] = CATEGORIES.index("flagged · truly clean")
    return codes


def _version(*arrays: np.ndarray | None) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def map_payload(
    coords: np.ndarray,
    codes: np.ndarray,
    *,
    sample_ids: np.ndarray,
    given: np.ndarray,
    suggested: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    scores: dict[str, np.ndarray] | None = None,
    true: np.ndarray | None = None,
    height: int = 560,
) -> dict:
    """Arguments of one render of the map component, compact enough to send on every rerun.

    Args:
        coords: (M, 2) map coordinates of the drawn points.
        codes: (M,) uint8 status codes from :func:`status_codes`.
        sample_ids: (M,) dataset indices; a box / lasso selection returns these.
        given / suggested / true: (M,) class indices into ``class_names`` (true optional).
        scores: {name: (M,) float} shown on hover (NaN shown as "–").

    Arrays travel as raw bytes (float32 / int32 / uint8|uint16); ``coords_version`` changes only
    when the points themselves change, which is when the component redraws instead of recolouring.
    """
    coords = np.ascontiguousarray(coords, dtype=np.float32)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (M, 2), got shape {coords.shape}")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    ids = np.ascontiguousarray(sample_ids, dtype=np.int32)
    if not len(codes) == len(ids) == len(coords):
        raise ValueError(f"coords, codes and sample_ids differ in length: {len(coords)}, {len(codes)}, {len(ids)}")
    label_dtype = np.uint8 if len(class_names) <= 256 else np.uint16
    labels = {name: None if values is None else np.ascontiguousarray(values, dtype=label_dtype)
              for name, values in (("given", given), ("suggested", suggested), ("true_labels", true))}
    scores = scores or {}
    score_block = (np.ascontiguousarray(np.stack([np.asarray(v, dtype=np.float32) for v in scores.values()]))
                   if scores else None)
    return {
        "coords": coords.tobytes(), "ids": ids.tobytes(), "codes": codes.tobytes(),
        "coords_version": _version(coords, ids),
        "counts": np.bincount(codes, minlength=len(CATEGORIES))[:len(CATEGORIES)].tolist(),
        "categories": list(CATEGORIES), "palette": list(STATUS_COLOURS.values()),
        "class_names": [str(c) for c in class_names], "label_bytes": np.dtype(label_dtype).itemsize,
        **{name: None if values is None else values.tobytes() for name, values in labels.items()},
        "score_names": list(scores), "scores": None if score_block is None else score_block.tobytes(),
        "hover_version": _version(*labels.values(), score_block),
        "height": int(height),
    }


@functools.lru_cache(maxsize=None)
def _component(folder: str):
    import streamlit.components.v1 as components

    return components.declare_component(NAME, path=folder)


def component_folder() -> Path | None:
    """The materialised folder, or None (logged) when it cannot be written."""
    try:
        return materialise()
    except OSError as exc:
        log.warning("map component unavailable, falling back to st.plotly_chart: %s", exc)
        return None


def umap_map(payload: dict, *, key: str) -> np.ndarray | None:
    """Draw the map; returns the sample ids of the current box / lasso selection (sorted, unique).

    Returns None when the component could not be materialised (the caller falls back).
    """
    folder = component_folder()
    if folder is None:
        return None
    value = _component(str(folder))(**payload, key=key, default=None)
    return selected_ids(value, payload["coords_version"])


def selected_ids(value, coords_version: str) -> np.ndarray:
    """Ids from the component's value, ignoring a selection made on other points."""
    if not isinstance(value, dict) or value.get("coords_version") != coords_version:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.asarray(value.get("ids") or [], dtype=np.int64))
