"""Image and text encoders: open_clip models from local weights, and a weight-free pixel baseline.

``load_encoder(EncoderSpec(...))`` returns an :class:`Encoder` whose ``preprocess`` turns a PIL RGB
image into a CHW float tensor and whose ``encode_images`` maps a batch of such tensors to
L2-normalised float32 features on the CPU. Weights are looked up locally (see
:mod:`clipcleaner_core.weights`); nothing is downloaded unless the caller passes
``allow_download=True``.

The ``pixels`` encoder needs no weights at all: it resizes to 16x16 RGB, flattens, centres and
L2-normalises, so the demo and every later stage run without CLIP (it has no text tower, hence no
zero-shot scores).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from clipcleaner_core.errors import CLIPCleanerError, ConfigError
from clipcleaner_core.weights import (
    PIXELS,
    WeightsSource,
    list_open_clip_models,
    preprocess_config,
    resolve_weights,
    weights_status,
)

__all__ = [
    "PIXELS",
    "EncoderSpec",
    "Encoder",
    "load_encoder",
    "encoder_identity",
    "list_open_clip_models",
    "weights_status",
    "resolve_device",
    "resolve_precision",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PIXEL_SIZE = 16
TEXT_BATCH = 256
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to run and where.

    Attributes:
        model: ``"pixels"``, an open_clip model name (``"ViT-B-32"``), ``"hf-hub:org/repo"`` or
            ``"local-dir:/path"`` (a folder with ``open_clip_config.json`` and weights).
        pretrained: an open_clip pretrained tag (``"openai"``), a local checkpoint file
            (``.safetensors``, or torch weights loaded with ``weights_only=True``), or None for a
            seeded random initialisation (benchmarks only; ignored for ``pixels``/``hf-hub:``).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        precision: ``"auto"`` (mixed precision on GPU: bf16 where supported else fp16; fp32 on
            CPU), ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast; weights stay fp32).
    """

    model: str = PIXELS
    pretrained: str | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"encoder model must be a non-empty name, got {self.model!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}"
            )
        if self.pretrained is not None:
            object.__setattr__(self, "pretrained", str(self.pretrained) or None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other strings are checked and returned."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 (or fp16) autocast on CUDA, fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        open_clip_version = version("open_clip_torch")
    except PackageNotFoundError:
        open_clip_version = None
    return {"torch": torch.__version__.split("+")[0], "open_clip": open_clip_version}


def _identity(spec: EncoderSpec, source: WeightsSource, preprocess: dict, precision: str) -> dict:
    return {
        "model": spec.model,
        "pretrained": spec.pretrained if spec.model != PIXELS else None,
        "weights": source.identity,
        "preprocess": preprocess,
        "precision": precision,
        "versions": _versions(),
    }


def encoder_identity(spec: EncoderSpec) -> dict:
    """What the embeddings of ``spec`` depend on, computed without loading the model.

    Model name, weights identity (tag and cached blob, or file name, size and mtime), the
    preprocessing configuration, precision and library versions. Raises
    ``WeightsUnavailableError`` when the weights are not available locally.
    """
    if spec.model == PIXELS:
        return _identity(spec, WeightsSource.none(), _pixel_preprocess_desc(), "fp32")
    source = resolve_weights(spec.model, spec.pretrained, allow_download=False)
    precision = resolve_precision(spec.precision, resolve_device(spec.device))
    return _identity(spec, source, preprocess_config(spec.model, source), precision)


class Encoder:
    """A loaded encoder. Use :func:`load_encoder` rather than constructing one directly.

    Attributes:
        spec: the :class:`EncoderSpec` it was loaded from.
        name: human-readable name (``"ViT-B-32 (openai)"``, ``"pixels 16x16"``).
        dim: feature dimension D.
        has_text: whether :meth:`encode_text` is available (zero-shot scores need it).
        device: torch device the model runs on.
        preprocess: callable PIL RGB image -> (3, H, W) float tensor (picklable: runs in workers).
        input_shape: (3, H, W) of a preprocessed image.
    """

    spec: EncoderSpec
    name: str
    dim: int
    has_text: bool
    device: torch.device
    input_shape: tuple[int, int, int]

    def __init__(self, spec: EncoderSpec, identity: dict) -> None:
        self.spec = spec
        self._identity = identity

    def identity(self) -> dict:
        """JSON-serialisable description of everything the features depend on."""
        return dict(self._identity)

    def preprocess(self, image) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(B, 3, H, W) preprocessed images -> (B, D) L2-normalised float32 features on CPU."""
        raise NotImplementedError

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """M strings -> (M, D) L2-normalised float32 features."""
        raise CLIPCleanerError(
            f"encoder {self.name!r} has no text tower, so it cannot embed prompts; zero-shot "
            "scores need a CLIP model (e.g. --model ViT-B-32 --pretrained openai)"
        )


def _pixel_preprocess_desc() -> dict:
    return {"kind": "pixels", "size": PIXEL_SIZE, "interpolation": "bilinear", "centre": "per-image"}


def _pixel_preprocess(image, size: int) -> torch.Tensor:
    from PIL import Image

    small = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)


class PixelEncoder(Encoder):
    """Weight-free baseline: 16x16 RGB pixels, centred per image, L2-normalised (no text tower)."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__(spec, _identity(spec, WeightsSource.none(), _pixel_preprocess_desc(), "fp32"))
        self.name = f"pixels {PIXEL_SIZE}x{PIXEL_SIZE}"
        self.dim = 3 * PIXEL_SIZE * PIXEL_SIZE
        self.has_text = False
        self.device = torch.device("cpu")
        self.input_shape = (3, PIXEL_SIZE, PIXEL_SIZE)
        self.preprocess = partial(_pixel_preprocess, size=PIXEL_SIZE)

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        flat = batch.reshape(len(batch), -1).float()
        centred = flat - flat.mean(dim=1, keepdim=True)
        return torch.nn.functional.normalize(centred, dim=1)


class OpenCLIPEncoder(Encoder):
    """An open_clip model loaded from a local checkpoint (see :func:`load_encoder`)."""

    def __init__(self, spec: EncoderSpec, source: WeightsSource) -> None:
        import open_clip

        self.device = resolve_device(spec.device)
        self.precision = resolve_precision(spec.precision, self.device)
        name, kwargs = source.create_args(spec.model)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # deterministic when pretrained is None (random init)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained_text=False, weights_only=True, **kwargs
                )
        except Exception as exc:  # noqa: BLE001 - surface any loader failure as one user error
            raise CLIPCleanerError(
                f"Could not load {spec.model} weights from {source.path}: {exc}. Use a safetensors "
                "file or a torch state dict of plain tensors (loaded with weights_only=True, so "
                "pickled objects are refused), saved from the same architecture."
            ) from exc
        self.model = model.eval().to(self.device)
        self._tokenizer_name = name
        self._tokenizer = None
        pp_cfg = dict(model.visual.preprocess_cfg)
        super().__init__(spec, _identity(spec, source, preprocess_config(spec.model, source), self.precision))
        size = pp_cfg["size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.input_shape = (3, int(height), int(width))
        self.preprocess = preprocess
        self.dim = int(source.embed_dim(spec.model))
        self.has_text = hasattr(self.model, "encode_text")
        label = spec.pretrained if source.kind != "file" else source.path.name
        self.name = f"{spec.model} ({label or 'random init'})"

    def _autocast(self):
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(batch.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import open_clip

        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self._tokenizer_name)
        parts = []
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = self._tokenizer(list(texts[start:start + TEXT_BATCH])).to(self.device)
            with torch.inference_mode(), self._autocast():
                features = self.model.encode_text(tokens)
            parts.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)


def load_encoder(spec: EncoderSpec, *, allow_download: bool = False) -> Encoder:
    """Load the encoder described by ``spec``.

    Weights come from a local file, the Hugging Face / open_clip cache, or (only with
    ``allow_download=True``) the network. Raises ``WeightsUnavailableError`` naming the fixes when
    they cannot be found locally, quickly and without touching the network.
    """
    if spec.model == PIXELS:
        return PixelEncoder(spec)
    source = resolve_weights(spec.model, spec.pretrained, allow_download=allow_download)
    encoder = OpenCLIPEncoder(spec, source)
    logger.info("loaded encoder %s on %s (%s)", encoder.name, encoder.device, encoder.precision)
    return encoder
