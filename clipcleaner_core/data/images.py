"""Image decoding that survives real-world files.

``load_image`` always returns an 8-bit RGB ``PIL.Image`` with EXIF orientation applied, whatever the
file's mode (palette, RGBA, LA, CMYK, 1-bit, 16-bit, 32-bit int or float), or raises
:class:`ImageLoadError` with a short reason. ``check_image_header`` is the cheap per-file check the
dataset loaders run (no pixel decode), so bad files land in ``Dataset.bad_files`` instead of stopping
the load.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico"}
)
"""File extensions treated as images, lower case; match with :func:`is_image_file`."""

MAX_IMAGE_PIXELS = 89_478_485
"""Images with more pixels than this (about 9500 x 9500) are refused as possible decompression bombs."""

# PIL warns above MAX_IMAGE_PIXELS and raises above twice that; we turn both into a skip ourselves.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]

_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_TAIL_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}
_TAIL_BYTES = 64


class ImageLoadError(DataError):
    """An image file cannot be decoded; ``reason`` is a short phrase for the bad-files table."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot read image {source}: {reason}; the file is skipped")
        self.source = source
        self.reason = reason


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has an image extension (case-insensitive, e.g. ``.JPG``)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(source: ImageSource, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``source`` (a path, bytes or binary file object) to an 8-bit RGB image.

    EXIF orientation is applied; transparency is composited on white; 16-bit images are scaled to
    8 bits (65535 -> 255), never clipped. Raises :class:`ImageLoadError` for empty, corrupt,
    truncated or oversized (more than ``max_pixels`` pixels) files.
    """
    name = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageLoadError(name, "empty file")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        _check_not_empty(Path(source), name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(source, name)
        try:
            _check_pixels(image, name, max_pixels)
            try:
                image.load()
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                    Image.DecompressionBombWarning) as exc:
                raise ImageLoadError(name, f"truncated or corrupt ({_short(exc)})") from None
            return to_rgb(_apply_exif_orientation(image))
        finally:
            image.close()


def check_image_header(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Cheap check of one image file without decoding its pixels.

    Returns None when the file looks usable, else a short reason ("empty file", "not an image ...",
    "too large ...", "truncated ..."). PNG and JPEG files are also checked for their end marker; a
    file missing it is fully decoded once to decide.
    """
    path = Path(path)
    try:
        load = _header_or_reason(path, max_pixels)
    except ImageLoadError as exc:
        return exc.reason
    if load is None:
        return None
    try:
        load_image(path, max_pixels=max_pixels)
    except ImageLoadError as exc:
        return exc.reason
    return None


def _header_or_reason(path: Path, max_pixels: int) -> bool | None:
    """Raise ImageLoadError for a bad header; return True when a full decode is needed to decide."""
    name = str(path)
    _check_not_empty(path, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(path, name)
        try:
            _check_pixels(image, name, max_pixels)
            marker = _TAIL_MARKERS.get(image.format or "")
        finally:
            image.close()
    if marker is None:
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        tail = handle.read()
    return None if marker in tail else True


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: alpha over white, high bit depths scaled to 0..255."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I;16") or mode in {"I", "F"}:
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "P":
        return image.convert("RGB")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageLoadError(getattr(image, "filename", "") or "<image>",
                             f"unsupported image mode {mode} ({_short(exc)})") from None


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit int and float pixels to uint8 by their nominal range, not by clipping."""
    values = values.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = values / 257.0
    elif mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        scaled = values / 257.0  # 16-bit files decoded as 32-bit int by some plugins
    elif mode == "F" and values.size and values.min() >= 0 and values.max() <= 1.0:
        scaled = values * 255.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        span = high - low
        scaled = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _open(source, name: str) -> Image.Image:
    try:
        return Image.open(source)
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found") from None
    except PermissionError:
        raise ImageLoadError(name, "unreadable (permission denied)") from None
    except IsADirectoryError:
        raise ImageLoadError(name, "a folder, not an image file") from None
    except UnidentifiedImageError:
        if Path(name).suffix.lower() in (".svg", ".svgz"):
            raise ImageLoadError(name, "SVG vector image: not decoded; convert it to PNG to use it") from None
        raise ImageLoadError(name, "not an image or an unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(name, "too large: possible decompression bomb") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(name, f"corrupt header ({_short(exc)})") from None


def _check_not_empty(path: Path, name: str) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found") from None
    except OSError as exc:
        raise ImageLoadError(name, f"unreadable ({_short(exc)})") from None
    if size == 0:
        raise ImageLoadError(name, "empty file")


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(name, f"invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageLoadError(
            name, f"too large: {width}x{height} pixels exceeds {max_pixels} (possible decompression bomb)"
        )


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # malformed EXIF must not lose an otherwise good image
        logger.debug("ignoring unreadable EXIF in %s: %s", _describe(image), exc)
        return image


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return str(getattr(source, "filename", None) or getattr(source, "name", None) or "<image>")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
