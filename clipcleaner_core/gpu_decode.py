"""Decode JPEGs on the model's device and preprocess them there: the path that keeps a GPU fed.

CPU JPEG decoding (~400 images/s per core) cannot feed a GPU that encodes over 10,000 images/s. On
CUDA, DataLoader workers only read each file's bytes (and parse its header); the main process
decodes a whole batch at once with ``torchvision.io.decode_jpeg(list, device="cuda")`` (nvJPEG) and
resizes, crops and normalises on the GPU with the encoder's own preprocessing settings
(:class:`DevicePreprocess`). Batches arrive in pinned host memory and are copied with
``non_blocking=True``; a helper thread prepares the next batches on a side CUDA stream while the
model encodes the current one (:func:`prefetched`).

Everything else takes the CPU path (PIL in the workers, :mod:`clipcleaner_core.data.images`), so
the result and the bad-files table stay those of the CPU path: non-JPEG files, JPEGs that are not
plain RGB / greyscale, that carry an EXIF rotation, that lack their end marker (truncated) or that are
oversized, in-memory datasets, and any JPEG the device decoder refuses (decoded again by PIL in the
main process; a file PIL cannot read either is listed with PIL's reason).

The same code runs with ``device="cpu"`` (``decode_jpeg`` on the CPU), which is how it is tested
without a GPU: libjpeg-turbo's pixels are exactly PIL's, and after resizing each value is within one
8-bit level (1/255 before normalisation) of the PIL path, a quarter level on average (PIL and torch
round their separable resampling passes differently; see tests/test_gpu_decode.py). nvJPEG's
IDCT may differ from libjpeg-turbo's by a level or two more.
"""
from __future__ import annotations

import contextlib
import io
import logging
import queue
import threading
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
DEVICE_MODES = ("RGB", "L")
READY, JPEG = "ready", "jpeg"


@dataclass(frozen=True)
class DevicePreprocess:
    """An encoder's image preprocessing as tensor operations on any device.

    Attributes:
        size: an int resizes the shorter side to it (aspect kept, as torchvision's ``Resize(int)``);
            a (height, width) pair resizes to exactly that.
        interpolation: ``"bicubic"`` or ``"bilinear"`` (antialiased when shrinking, like PIL).
        crop: (height, width) of the centre crop, or None.
        mean, std: per-channel normalisation of the [0, 1] pixels, or None.
    """

    size: int | tuple[int, int]
    interpolation: str
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB on any device -> (3, h, w) float32 on the same device."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        size = [self.size] if isinstance(self.size, int) else list(self.size)
        resized = F.resize(image.float(), size, interpolation=mode, antialias=True)
        pixels = resized.round_().clamp_(0, 255)  # PIL resamples to 8 bits; so do we
        if self.crop is not None:
            pixels = F.center_crop(pixels, list(self.crop))
        pixels = pixels / 255.0
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=pixels.device).view(3, 1, 1)
            std = torch.tensor(self.std, device=pixels.device).view(3, 1, 1)
            pixels = (pixels - mean) / std
        return pixels


def device_preprocess_for(encoder) -> DevicePreprocess | None:
    """The :class:`DevicePreprocess` equal to ``encoder.preprocess``, or None when it holds a step
    this module does not reproduce (then every image takes the CPU path)."""
    from clipcleaner_core.encoders import PIXEL_SIZE, PixelEncoder

    if isinstance(encoder, PixelEncoder):
        return DevicePreprocess(size=(PIXEL_SIZE, PIXEL_SIZE), interpolation="bilinear")
    steps = getattr(encoder.preprocess, "transforms", None)
    if steps is None:
        return None
    fields: dict = {}
    for step in steps:
        kind = type(step).__name__
        if kind == "Resize" and step.max_size is None and step.antialias is not False:
            size = step.size if isinstance(step.size, int) else tuple(step.size)
            if isinstance(size, tuple) and len(size) == 1:
                size = size[0]
            interpolation = getattr(step.interpolation, "value", str(step.interpolation))
            if interpolation not in ("bicubic", "bilinear"):
                return None
            fields.update(size=size, interpolation=interpolation)
        elif kind == "CenterCrop":
            fields["crop"] = tuple(int(v) for v in step.size)
        elif kind == "Normalize":
            fields.update(mean=tuple(float(v) for v in step.mean), std=tuple(float(v) for v in step.std))
        elif kind in ("MaybeConvertMode", "MaybeToTensor", "ToTensor") or \
                getattr(step, "__name__", "") == "_convert_to_rgb":
            continue  # decoding to RGB and scaling to [0, 1] are built in
        else:
            logger.info("preprocessing step %s has no device version: decoding on the CPU", kind)
            return None
    if "size" not in fields:
        return None
    return DevicePreprocess(**fields)


def jpeg_bytes(path, *, max_pixels: int | None = None) -> torch.Tensor | None:
    """The file's bytes as a uint8 tensor when the device decoder can take it, else None.

    None for anything that is not a complete baseline-mode (RGB or greyscale) JPEG without an EXIF
    rotation and within ``max_pixels``: those are decoded by PIL, as on the CPU path.
    """
    from PIL import Image

    from clipcleaner_core.data.images import MAX_IMAGE_PIXELS

    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(JPEG_MAGIC) or not data.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:  # the header only: no pixels are decoded
            width, height = image.size
            if image.mode not in DEVICE_MODES or width * height > (max_pixels or MAX_IMAGE_PIXELS):
                return None
            if image.getexif().get(0x0112, 1) != 1:  # an EXIF orientation to apply
                return None
    except Exception:  # noqa: BLE001 - the CPU path names what is wrong with the file
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class DeviceDecodeSource(torch.utils.data.Dataset):
    """Sample i -> (i, kind, payload, reason): ``kind`` JPEG with the file's bytes as payload, or
    READY with the CPU path's preprocessed tensor (and its failure reason, or "")."""

    def __init__(self, cpu_source) -> None:
        self.cpu_source = cpu_source  # clipcleaner_core.embed_loader.ImageSource

    def __len__(self) -> int:
        return len(self.cpu_source)

    def __getitem__(self, index: int):
        dataset = self.cpu_source.dataset
        if dataset.images is None:
            try:
                data = jpeg_bytes(dataset.abspath(index))
            except OSError:
                data = None  # the CPU path reports the unreadable file
            if data is not None:
                return index, JPEG, data, ""
        _, tensor, reason = self.cpu_source[index]
        return index, READY, tensor, reason


def collate(items):
    indices, kinds, payloads, reasons = zip(*items)
    return torch.tensor(indices), list(kinds), list(payloads), list(reasons)


class DeviceBatcher:
    """Turns a collated batch of :class:`DeviceDecodeSource` items into (indices, images on
    ``device``, reasons), decoding the JPEGs there in one call."""

    def __init__(self, preprocess: DevicePreprocess, cpu_source, device: torch.device) -> None:
        self.preprocess = preprocess
        self.cpu_source = cpu_source
        self.device = torch.device(device)

    def __call__(self, batch):
        indices, kinds, payloads, reasons = batch
        reasons = list(reasons)
        images: list[torch.Tensor | None] = [None] * len(kinds)
        jpegs = [row for row, kind in enumerate(kinds) if kind == JPEG]
        for row, image in zip(jpegs, self._decode([payloads[row] for row in jpegs])):
            if image is None:  # the device decoder refused it: PIL decodes it (or names the fault)
                _, tensor, reasons[row] = self.cpu_source[int(indices[row])]
                images[row] = tensor.to(self.device, non_blocking=True)
            else:
                images[row] = self.preprocess(image)
        for row, kind in enumerate(kinds):
            if kind == READY:
                images[row] = payloads[row].to(self.device, non_blocking=True)
        return indices, torch.stack(images), reasons

    def _decode(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        from torchvision.io import ImageReadMode, decode_jpeg

        if not data:
            return []
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as exc:  # one bad file fails the whole batched call
            logger.debug("batched JPEG decode failed (%s); decoding one by one", exc)
        decoded = []
        for one in data:
            try:
                decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                decoded.append(None)
        return decoded


PREFETCH_DEPTH = 2
_DONE = object()


def prefetched(batches, batcher: DeviceBatcher, *, depth: int = PREFETCH_DEPTH):
    """Yield ``batcher(batch)`` for each of ``batches``, prepared ``depth`` batches ahead in a helper
    thread (on its own CUDA stream on a GPU), so decoding batch k+1 overlaps encoding batch k.

    The consumer's stream waits for each batch's decode before using it; an exception in the helper
    is raised here; leaving the loop early stops the helper.
    """
    device = batcher.device
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                out.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        try:
            for batch in batches:
                with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    prepared = batcher(batch)
                    event = torch.cuda.Event() if stream is not None else None
                    if event is not None:
                        event.record(stream)
                if not put((prepared, event)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)
            return
        put(_DONE)

    helper = threading.Thread(target=produce, name="device-decode", daemon=True)
    helper.start()
    try:
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            (indices, images, reasons), event = item
            if event is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(event)
                images.record_stream(consumer)
            yield indices, images, reasons
    finally:
        stop.set()
        helper.join()


def device_decode_available(device: torch.device) -> bool:
    """Whether JPEGs are decoded on ``device`` by default (CUDA only; the CPU keeps PIL)."""
    return torch.device(device).type == "cuda"


__all__ = ["DeviceBatcher", "DeviceDecodeSource", "DevicePreprocess", "device_preprocess_for",
           "jpeg_bytes", "device_decode_available", "prefetched"]
