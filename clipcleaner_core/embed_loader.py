"""The batched encoding loop behind :func:`clipcleaner_core.embed.embed_dataset`.

Chunk ``c`` covers samples ``[c * chunk_size, (c + 1) * chunk_size)``. It is complete when both
``chunks/<c>.npy`` (features) and ``chunks/<c>.json`` (row count, undecodable rows and the rank that
wrote it) exist; the
JSON is written second, both atomically, so a crash never leaves a chunk that looks complete but
is not. Batches never straddle chunks, so each chunk is saved the moment its last batch is done.
Under ``torchrun`` each rank runs this loop over its own chunks (see
:mod:`clipcleaner_core.embed_sharded`). On CUDA the JPEGs are decoded on the GPU
(:mod:`clipcleaner_core.gpu_decode`); everything else is decoded by PIL in the workers.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from clipcleaner_core import atomic
from clipcleaner_core.errors import Cancelled

logger = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
PREFETCH_BATCHES = 4
WORKER_NICE = 10


def chunk_plan(chunks: Path, n: int, chunk_size: int) -> int:
    """The chunk size of this folder: a resumed run keeps the one its first run chose."""
    plan_path = chunks / PLAN_NAME
    if plan_path.exists():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        if plan.get("n") == n:
            return int(plan["chunk_size"])
    atomic.write_json(plan_path, {"n": n, "chunk_size": chunk_size})
    return chunk_size


def _chunk_paths(chunks: Path, chunk: int) -> tuple[Path, Path]:
    return chunks / f"{chunk:05d}.npy", chunks / f"{chunk:05d}.json"


def read_chunk(chunks: Path, chunk: int) -> tuple[np.ndarray, dict[int, str]] | None:
    """(features, {sample index: reason}) of a complete chunk, or None if it is not complete."""
    features_path, meta_path = _chunk_paths(chunks, chunk)
    if not (features_path.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    features = np.load(features_path)
    if len(features) != meta["rows"]:
        return None
    return features, {int(k): v for k, v in meta["bad"].items()}


def chunk_rank(chunks: Path, chunk: int) -> int:
    """The rank (of a ``torchrun`` job; 0 for a single process) that wrote a complete chunk."""
    meta = json.loads(_chunk_paths(chunks, chunk)[1].read_text(encoding="utf-8"))
    return int(meta.get("rank", 0))


def _write_chunk(chunks: Path, chunk: int, features: np.ndarray, bad: dict[int, str], rank: int = 0) -> None:
    features_path, meta_path = _chunk_paths(chunks, chunk)
    atomic.save_npy(features_path, features)
    atomic.write_json(meta_path, {"rows": len(features), "bad": {str(k): v for k, v in bad.items()},
                                  "rank": rank})


class ImageSource(torch.utils.data.Dataset):
    """Sample i -> (i, preprocessed (3, H, W) tensor, failure reason or "")."""

    def __init__(self, dataset, preprocess, input_shape) -> None:
        self.dataset = dataset
        self.preprocess = preprocess
        self.input_shape = tuple(input_shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return index, self.preprocess(self._image(index)), ""
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            return index, torch.zeros(self.input_shape), str(reason)

    def _image(self, index: int):
        from PIL import Image

        if self.dataset.images is not None:
            return Image.fromarray(np.asarray(self.dataset.images[index]))
        from clipcleaner_core.data.images import load_image

        return load_image(self.dataset.abspath(index))


def _collate(items):
    indices, tensors, reasons = zip(*items)
    return torch.tensor(indices), torch.stack(tensors), list(reasons)


def _worker_init(_worker_id: int, *, nice: int = 0) -> None:
    """Workers decode with one torch thread; the main process keeps every thread for the model.

    When the model runs on the CPU, workers also run at lower priority: they need only a few per
    cent of the CPU, and a worker pre-empting one of the model's threads would stall every
    thread of that matrix multiply.
    """
    torch.set_num_threads(1)
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(nice)


def _batches(pending: list[int], n: int, chunk_size: int, batch_size: int) -> list[list[int]]:
    batches = []
    for chunk in pending:
        stop = min(n, (chunk + 1) * chunk_size)
        for start in range(chunk * chunk_size, stop, batch_size):
            batches.append(list(range(start, min(stop, start + batch_size))))
    return batches


def make_loader(dataset, encoder, batches, num_workers: int, *, device_decode: bool | None = None):
    """An iterable of (indices, (B, 3, H, W) images, reasons) over ``batches``.

    ``device_decode`` (None: on CUDA) decodes JPEGs on ``encoder.device`` in the main process (see
    :mod:`clipcleaner_core.gpu_decode`); the workers then only read bytes. Otherwise the workers
    decode and preprocess with PIL.
    """
    from clipcleaner_core import gpu_decode

    source = ImageSource(dataset, encoder.preprocess, encoder.input_shape)
    init = partial(_worker_init, nice=WORKER_NICE if encoder.device.type == "cpu" else 0)
    extra = {"prefetch_factor": PREFETCH_BATCHES, "worker_init_fn": init} if num_workers else {}
    if device_decode is None:
        device_decode = gpu_decode.device_decode_available(encoder.device) and dataset.images is None
    preprocess = gpu_decode.device_preprocess_for(encoder) if device_decode else None
    if preprocess is None:
        return torch.utils.data.DataLoader(
            source, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
            pin_memory=encoder.device.type == "cuda", **extra,
        )
    loader = torch.utils.data.DataLoader(
        gpu_decode.DeviceDecodeSource(source), batch_sampler=batches, num_workers=num_workers,
        collate_fn=gpu_decode.collate, pin_memory=encoder.device.type == "cuda", **extra,
    )
    return gpu_decode.prefetched(loader, gpu_decode.DeviceBatcher(preprocess, source, encoder.device))


def encode_chunks(dataset, encoder, chunks: Path, pending: list[int], *, chunk_size: int,
                  batch_size: int, num_workers: int, progress=None, cancel=None, rank: int = 0,
                  device_decode: bool | None = None) -> None:
    """Encode the ``pending`` chunks, saving each (marked with ``rank``) as soon as it is complete.

    ``progress("embed", done, n, images_per_s)`` counts every row outside ``pending`` as done.
    """
    n = len(dataset)
    n_chunks = -(-n // chunk_size)
    done = n - sum(min(n, (c + 1) * chunk_size) - c * chunk_size for c in pending)
    loader = make_loader(dataset, encoder, _batches(pending, n, chunk_size, batch_size), num_workers,
                         device_decode=device_decode)
    start, encoded = time.perf_counter(), 0
    current, buffer, bad, filled = None, None, {}, 0
    if progress is not None:
        progress("embed", done, n, None)
    for indices, images, reasons in loader:
        chunk = int(indices[0]) // chunk_size
        if chunk != current:
            rows = min(n, (chunk + 1) * chunk_size) - chunk * chunk_size
            current, buffer, bad, filled = chunk, np.zeros((rows, encoder.dim), np.float32), {}, 0
        features = encoder.encode_images(images).cpu().numpy()
        for row, (index, reason) in enumerate(zip(indices.tolist(), reasons)):
            if reason:
                features[row] = 0.0
                bad[index] = reason
        buffer[filled:filled + len(features)] = features
        filled += len(features)
        if filled == len(buffer):
            _write_chunk(chunks, chunk, buffer, bad, rank)
        encoded += len(features)
        if progress is not None:
            progress("embed", done + encoded, n, encoded / max(time.perf_counter() - start, 1e-9))
        if cancel is not None and cancel():
            saved = sum(read_chunk(chunks, c) is not None for c in range(n_chunks))
            del loader
            raise Cancelled(
                f"Embedding cancelled: {saved} of {n_chunks} chunks are saved; run the same "
                "command again to resume from there."
            )
