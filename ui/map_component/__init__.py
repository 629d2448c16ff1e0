"""The Tune page's map as a small Streamlit component that draws every point with deck.gl.

The component is keyed: its iframe stays mounted across reruns and receives each run's arguments by
message. What travels, and when:

* the layout (float32 x, y and int32 dataset indices, 12 bytes a point) is written once per layout
  to ``data/coords-<version>.bin.gz`` in the component folder and fetched by the iframe only when
  its version changes, so a quick layout followed by the final one redraws exactly once;
* the hover data (given / suggested / true labels, scores) likewise, as
  ``data/hover-<version>.bin.gz``, fetched in the background once the points are drawn;
* every render (each slider move) sends one status byte per point plus the legend, and the
  iframe recolours the points it already holds.

deck.gl comes from the installed pydeck package (its browser bundle, ``deck.*`` globals):
:func:`materialise` writes ``index.html``, ``renderers.js`` and ``map.js`` from this folder and hard-links (else copies)
the bundle into ``<cache>/components/umap_map/``, so no copy lives in git and nothing is fetched from
the network. The data files are gzip files, stored uncompressed inside (level 0: compressing
saved 12-27 % of their size for seconds of CPU at a million points) and unpacked by the browser's
DecompressionStream, because Streamlit's server gzips every other response of these megabytes again
on each request, which took 2.5 s for a million-point layout. When that folder cannot be written,
:func:`umap_map` returns None and the page falls back to ``st.plotly_chart``.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ui.plots import STATUS_COLOURS

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ASSETS = ("index.html", "renderers.js", "map.js")  # written from this folder
CATEGORIES = tuple(STATUS_COLOURS)  # status code k = CATEGORIES[k]
NAME = "umap_map"
VERSION_CHARS = 16  # a selection sent back starts with the coords_version it was made on
KEEP_DATA_FILES = 8  # per kind; older layouts and hover files are removed
RENDERERS = ("auto", "webgl", "canvas")


def deckgl_js() -> Path:
    """deck.gl's browser bundle (UMD, sets ``window.deck``) shipped inside the installed pydeck package."""
    import pydeck

    path = Path(pydeck.__file__).resolve().parent / "nbextension" / "static" / "index.js"
    if not path.is_file():
        raise FileNotFoundError(f"deck.gl's bundle not found at {path}; reinstall the pydeck package")
    return path


def materialise(root: str | os.PathLike | None = None) -> Path:
    """The component folder ``<root>/components/umap_map`` (root defaults to the cache), made ready.

    Writes :data:`ASSETS` from this folder and hard-links (else copies) deck.gl's
    bundle as ``deckgl.js``, each only when missing or different, so calling it again is cheap and
    leaves the files untouched. Raises OSError when the folder cannot be written.
    """
    if root is None:
        from clipcleaner_core.paths import cache_dir

        root = cache_dir()
    folder = Path(root) / "components" / NAME
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        text = (HERE / name).read_bytes()
        target = folder / name
        if not target.is_file() or target.read_bytes() != text:
            _replace(target, lambda tmp, text=text: tmp.write_bytes(text))
    source, target = deckgl_js(), folder / "deckgl.js"
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
    if is_noisy is None:
        return (~clean).view(np.uint8)
    # one table look-up per sample: [flagged & clean label, flagged & noisy, kept & clean, kept & noisy]
    table = np.array([CATEGORIES.index(name) for name in (
        "flagged · truly clean", "flagged · truly noisy", "kept", "kept · truly noisy")], dtype=np.uint8)
    return table[clean.view(np.uint8) * 2 + np.asarray(is_noisy, dtype=bool).view(np.uint8)]


def legend_names(has_truth: bool) -> list[str]:
    """The legend's name of each status code. With the truth known, code 0 holds only the kept
    samples whose label is right, so it is named so: "kept" alone would read as the Kept count."""
    names = list(CATEGORIES)
    if has_truth:
        names[0] = "kept · truly clean"
    return names


def legend_note(codes: np.ndarray, *, has_truth: bool, reviewed: int = 0, total: int | None = None) -> str:
    """The line under the legend: how its counts add up to the page's Kept / Flagged counts."""
    counts = np.bincount(codes, minlength=len(CATEGORIES))
    kept = int(counts[0] + counts[CATEGORIES.index("kept · truly noisy")])
    flagged = int(len(codes) - kept)
    if total is not None and total > len(codes):
        return (f"Drawn: a random {len(codes):,} of {total:,} samples ({kept:,} kept, {flagged:,} flagged); "
                "the counts above are of all samples.")
    note = f"Kept {kept:,} · Flagged {flagged:,}: the same samples as the counts above"
    if has_truth:
        note += ", each split by its known true label"
    if reviewed:
        note += f"; {reviewed:,} of them decided by your review in Inspect"
    return note + "."


def _version(*arrays: np.ndarray | None) -> str:
    """A content hash of the arrays (SHA-256: hardware-accelerated on current CPUs, 2-3x faster than
    BLAKE2 here, which matters at a million points on every rerun)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:VERSION_CHARS]


def encode_layout(coords: np.ndarray, ids: np.ndarray) -> bytes:
    """The layout file: float32 x, y interleaved (2 M values), then int32 dataset indices (M)."""
    return (np.ascontiguousarray(coords, dtype="<f4").tobytes()
            + np.ascontiguousarray(ids, dtype="<i4").tobytes())


def decode_layout(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_layout`: ((M, 2) float32 coordinates, (M,) int32 indices)."""
    if len(blob) % 12:
        raise ValueError(f"a layout file holds 12 bytes a point; got {len(blob)} bytes")
    m = len(blob) // 12
    return (np.frombuffer(blob, "<f4", count=2 * m).reshape(m, 2),
            np.frombuffer(blob, "<i4", count=m, offset=8 * m))


def hover_layout(fields: dict[str, np.ndarray]) -> list[dict]:
    """Where each 1-D array (uint8 / uint16 / float32) sits in the hover file: 4-byte aligned, in order.

    Per field ``{"name", "dtype" ("u1" | "u2" | "f4"), "offset", "count"}``: the iframe reads the file
    with exactly this (see :func:`decode_hover`).
    """
    layout, offset = [], 0
    for name, values in fields.items():
        dtype = np.dtype(values.dtype).str.lstrip("<>|=")
        if dtype not in ("u1", "u2", "f4") or np.ndim(values) != 1:
            raise ValueError(f"hover field {name!r} is {values.dtype} {np.shape(values)}; "
                             "expected a 1-D uint8, uint16 or float32 array")
        size = values.size * values.itemsize
        layout.append({"name": name, "dtype": dtype, "offset": offset, "count": int(values.size)})
        offset += size + (-size % 4)
    return layout


def encode_hover(fields: dict[str, np.ndarray]) -> bytes:
    """The hover file: the arrays, little-endian, where :func:`hover_layout` places them."""
    layout = hover_layout(fields)
    end = layout[-1]["offset"] + layout[-1]["count"] * np.dtype(layout[-1]["dtype"]).itemsize if layout else 0
    out = bytearray(end + (-end % 4))
    for field in layout:
        data = np.ascontiguousarray(fields[field["name"]], dtype="<" + field["dtype"]).tobytes()
        out[field["offset"]:field["offset"] + len(data)] = data
    return bytes(out)


def decode_hover(blob: bytes, layout: list[dict]) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_hover`: {name: 1-D array}."""
    return {f["name"]: np.frombuffer(blob, "<" + f["dtype"], count=f["count"], offset=f["offset"]) for f in layout}


@dataclasses.dataclass(frozen=True)
class MapPayload:
    """One render of the map: ``args`` go with every run; the arrays become files once per version."""

    args: dict
    coords: np.ndarray
    ids: np.ndarray
    hover: dict[str, np.ndarray]


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
    reviewed: int = 0,
    total: int | None = None,
    height: int = 600,
    renderer: str = "auto",
) -> MapPayload:
    """What the map component needs for one render.

    Args:
        coords: (M, 2) map coordinates of the drawn points.
        codes: (M,) uint8 status codes from :func:`status_codes`.
        sample_ids: (M,) dataset indices; a box / lasso selection returns these.
        given / suggested / true: (M,) class indices into ``class_names`` (true optional).
        scores: {name: (M,) float} shown on hover (NaN shown as "–").
        reviewed: how many of the points' statuses come from review decisions (said under the legend).
        total: the number of samples when the M drawn points are a sample of them.
        renderer: "auto" (deck.gl's WebGL on a GPU, a 2-D canvas on a software WebGL), "webgl" or
            "canvas".

    Only ``codes`` (one byte a point) and the legend change on a threshold move; ``coords_version``
    changes only when the points themselves change, which is when the component redraws.
    """
    if renderer not in RENDERERS:
        raise ValueError(f"unknown map renderer {renderer!r}; valid renderers: {', '.join(RENDERERS)}")
    coords = np.ascontiguousarray(coords, dtype=np.float32)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (M, 2), got shape {coords.shape}")
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    ids = np.ascontiguousarray(sample_ids, dtype=np.int32)
    if not len(codes) == len(ids) == len(coords):
        raise ValueError(f"coords, codes and sample_ids differ in length: {len(coords)}, {len(codes)}, {len(ids)}")
    if len(codes) and codes.max() >= len(CATEGORIES):
        raise ValueError(f"status codes must be below {len(CATEGORIES)}; got {int(codes.max())}")
    label_dtype = np.uint8 if len(class_names) <= 256 else np.uint16
    hover = {name: np.ascontiguousarray(values, dtype=label_dtype)
             for name, values in (("given", given), ("suggested", suggested), ("true_labels", true))
             if values is not None}
    scores = scores or {}
    hover.update({f"score{s}": np.ascontiguousarray(values, dtype=np.float32)
                  for s, values in enumerate(scores.values())})
    coords_version = _version(coords, ids)
    hover_version = _version(np.frombuffer(coords_version.encode(), np.uint8), *hover.values(),
                             np.frombuffer("\0".join(scores).encode(), np.uint8))  # the ids are in coords_version
    args = {
        "points": len(ids), "codes": codes.tobytes(),
        "coords_version": coords_version, "coords_file": f"coords-{coords_version}.bin.gz",
        "hover_version": hover_version, "hover_file": f"hover-{hover_version}.bin.gz",
        "hover_fields": hover_layout(hover),
        "counts": np.bincount(codes, minlength=len(CATEGORIES)).tolist(),
        "categories": legend_names(true is not None), "palette": list(STATUS_COLOURS.values()),
        "note": legend_note(codes, has_truth=true is not None, reviewed=reviewed, total=total),
        "class_names": [str(c) for c in class_names], "score_names": list(scores),
        "height": int(height), "renderer": renderer,
    }
    return MapPayload(args=args, coords=coords, ids=ids, hover=hover)


def write_data(folder: Path, payload: MapPayload) -> None:
    """Write the payload's layout and hover files into ``folder/data`` unless already there.

    Files are gzip files named by the content hash of what they hold, written atomically, and the oldest beyond
    :data:`KEEP_DATA_FILES` of each kind are removed (a file in use is touched on every render).
    """
    data = Path(folder) / "data"
    data.mkdir(parents=True, exist_ok=True)
    wanted = {
        payload.args["coords_file"]: lambda: encode_layout(payload.coords, payload.ids),
        payload.args["hover_file"]: lambda: encode_hover(payload.hover),
    }
    for name, encode in wanted.items():
        path = data / name
        if path.is_file():
            os.utime(path)
        else:
            blob = gzip.compress(encode(), compresslevel=0, mtime=0)
            _replace(path, lambda tmp, blob=blob: tmp.write_bytes(blob))
    for kind in ("coords-", "hover-"):
        files = sorted(data.glob(f"{kind}*.bin.gz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in files[KEEP_DATA_FILES:]:
            if old.name not in wanted:
                old.unlink(missing_ok=True)


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


def umap_map(payload: MapPayload, *, key: str) -> np.ndarray | None:
    """Draw the map; returns the sample ids of the current box / lasso selection (sorted, unique).

    Returns None when the component could not be materialised (the caller falls back).
    """
    folder = component_folder()
    if folder is None:
        return None
    try:
        write_data(folder, payload)
    except OSError as exc:
        log.warning("map data could not be written, falling back to st.plotly_chart: %s", exc)
        return None
    value = _component(str(folder))(**payload.args, key=key, default=None)
    return selected_ids(value, payload.args["coords_version"])


def selected_ids(value, coords_version: str) -> np.ndarray:
    """Ids from the component's value, ignoring a selection made on other points.

    The value is bytes: the coords_version the selection was made on (16 ASCII characters), then
    the selected dataset indices as little-endian int32.
    """
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes) or len(value) < VERSION_CHARS or (len(value) - VERSION_CHARS) % 4:
        return np.zeros(0, dtype=np.int64)
    if value[:VERSION_CHARS] != coords_version.encode("ascii"):
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.frombuffer(value, "<i4", offset=VERSION_CHARS).astype(np.int64))
