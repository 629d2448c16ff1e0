"""Embed a dataset's images (and prompt texts) once, cached by content, resumable and cancellable.

``embed_dataset`` writes ``<cache>/embeddings/<key>/features.npy`` (N, D) float32 (or float16 when
asked), L2-normalised, memory-mappable, plus ``valid.npy`` and a JSON sidecar, where ``key`` hashes
the dataset's content fingerprint and everything the encoder's output depends on (model, weights
identity, preprocessing, precision, library versions, and the storage dtype when it is float16).
Work is done in fixed-size chunks, each written atomically under ``chunks/``; an interrupted or
cancelled run resumes from the last complete chunk.
A file lock makes a second writer wait and then reuse the first writer's result. Under ``torchrun``
(pass ``distributed=``) the chunks are shared out between the ranks: see
:mod:`clipcleaner_core.embed_sharded`.

DataLoader workers decode and preprocess (one torch thread each; on CUDA they only read JPEG bytes,
decoded on the GPU, see :mod:`clipcleaner_core.gpu_decode`) while the main process runs the
model under ``torch.inference_mode``. An image that fails to decode does not stop the run: its row
is zeros, ``valid`` is False, and it is listed in ``bad_files`` with the reason.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipcleaner_core import atomic, storage
from clipcleaner_core.encoders import (
    PIXELS,
    Encoder,
    EncoderSpec,
    encoder_identity,
    load_encoder,
    resolve_device,
)
from clipcleaner_core.errors import CLIPCleanerError, ConfigError, DataError
from clipcleaner_core.paths import cache_dir
from clipcleaner_core.progress import Cancel, Progress
from clipcleaner_core.weights import resolve_weights

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FEATURES_NAME = "features.npy"
VALID_NAME = "valid.npy"
BAD_FILE_COLUMNS = ("index", "path", "reason")
DTYPES = ("float32", "float16")


@dataclass(frozen=True, eq=False)
class EmbeddingSet:
    """Cached image embeddings of one dataset under one encoder.

    Attributes:
        key: content key (folder name under ``<cache>/embeddings``).
        folder: the folder holding ``features.npy``, ``valid.npy`` and the sidecar.
        image_features: (N, D) float32 (or float16, see ``meta["dtype"]``) read-only memmap, rows
            L2-normalised (zeros where invalid).
        valid: (N,) bool, False where the image could not be decoded.
        bad_files: DataFrame(index, path, reason) of the undecodable images.
        meta: the sidecar (dataset, encoder identity, timings, ``dtype``, ``world_size`` and
            ``chunk_ranks``: the rank that wrote each chunk) plus ``reused``: True when this call
            found the embeddings already cached.
    """

    key: str
    folder: Path
    image_features: np.ndarray
    valid: np.ndarray
    bad_files: pd.DataFrame
    meta: dict

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def dim(self) -> int:
        return int(self.image_features.shape[1])


def embedding_key(dataset, encoder_spec: EncoderSpec, *, dtype: str = "float32") -> str:
    """Content key of ``dataset`` x ``encoder_spec`` x storage ``dtype`` (no model is loaded).

    float32 keys are those of every earlier version; only float16 adds the dtype to the hash, and
    only an open_clip model on CUDA (whose JPEGs are decoded on the device) adds the decode path.

    Examples
    --------
    >>> from clipcleaner_core.data import load_dataset
    >>> from clipcleaner_core.embed import embedding_key
    >>> from clipcleaner_core.encoders import EncoderSpec
    >>> demo = load_dataset("demo")
    >>> key = embedding_key(demo, EncoderSpec(model="pixels"))
    >>> len(key), key == embedding_key(demo, EncoderSpec(model="pixels")), key == embedding_key(
    ...     demo, EncoderSpec(model="pixels"), dtype="float16")
    (24, True, False)
    """
    payload = {
        "format": FORMAT_VERSION,
        "dataset": dataset.content_fingerprint(),
        "encoder": encoder_identity(encoder_spec),
    }
    if dtype != "float32":
        payload["dtype"] = dtype
    if encoder_spec.model != PIXELS and resolve_device(encoder_spec.device).type == "cuda":
        payload["decode"] = "device"
    return atomic.hash_json(payload)[:24]


def embed_dataset(
    dataset,
    encoder_spec: EncoderSpec,
    *,
    cache_root: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    chunk_size: int = 1024,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    allow_download: bool = False,
    dtype: str = "float32",
    distributed=None,
) -> EmbeddingSet:
    """Embed every image of ``dataset`` with ``encoder_spec``, reusing the cache when possible.

    Parameters
    ----------
    dataset
        a :class:`~clipcleaner_core.data.dataset.Dataset` (files or in-memory images).
    encoder_spec
        which encoder; weights must be local unless ``allow_download``.
    cache_root
        cache folder (default :func:`clipcleaner_core.paths.cache_dir`).
    batch_size
        images per model call.
    num_workers
        DataLoader worker processes (None: one per CPU core, at most 8; 0 for
        datasets of at most one batch).
    chunk_size
        images per resumable chunk file (a resumed run keeps the original size).
    progress
        ``progress("embed", done, total, images_per_s)`` after every batch
        (:mod:`clipcleaner_core.progress`).
    cancel
        polled after every batch; returning True saves the complete chunks and raises
        :class:`~clipcleaner_core.errors.Cancelled`. Calling again resumes.
    allow_download
        permit downloading missing weights.
    dtype
        ``"float32"`` or ``"float16"`` (half the disk and memory; the clean set is the
        same within Jaccard 0.999).
    distributed
        a :class:`~clipcleaner_core.train.distributed.Distributed` of a ``torchrun``
        job: rank ``r`` embeds chunks ``c`` with ``c % world_size == r`` and every rank returns
        the same set (see :mod:`clipcleaner_core.embed_sharded`). None: this process alone.

    Returns
    -------
    :class:`EmbeddingSet` with (N, D) L2-normalised features of ``dtype``.

    Examples
    --------
    >>> import tempfile
    >>> from clipcleaner_core.data import load_dataset
    >>> from clipcleaner_core.embed import embed_dataset, load_embedding
    >>> from clipcleaner_core.encoders import EncoderSpec
    >>> cache = tempfile.mkdtemp()
    >>> embedding = embed_dataset(load_dataset("demo"), EncoderSpec(model="pixels"), cache_root=cache)
    >>> embedding.image_features.shape, bool(embedding.valid.all())
    ((1797, 768), True)
    >>> load_embedding(embedding.key, cache_root=cache).image_features.shape  # cached by its key
    (1797, 768)
    """
    _validate(dataset, batch_size, num_workers, chunk_size, dtype)
    root = Path(cache_root) if cache_root is not None else cache_dir()
    options = {"batch_size": batch_size, "num_workers": num_workers, "chunk_size": chunk_size}
    if distributed is not None and distributed.enabled:
        from clipcleaner_core.embed_sharded import embed_sharded

        return embed_sharded(dataset, encoder_spec, distributed, root=root, options=options,
                             dtype=dtype, progress=progress, cancel=cancel,
                             allow_download=allow_download)
    _fetch_if_allowed(encoder_spec, allow_download)
    key = embedding_key(dataset, encoder_spec, dtype=dtype)
    folder = root / "embeddings" / key
    cached = _load_complete(key, folder)
    if cached is not None:
        return cached
    storage.make_folder(folder, what=f"the embeddings of {dataset.name!r}")
    with _lock(folder):
        cached = _load_complete(key, folder)
        if cached is not None:
            return cached
        _clear_incomplete(folder)
        _compute(dataset, encoder_spec, folder, key, options, dtype, progress, cancel)
    embedding = _load_complete(key, folder, reused=False)
    _register(root, embedding, dataset)
    return embedding


def load_embedding(key: str, *, cache_root: str | os.PathLike | None = None) -> EmbeddingSet:
    """Open previously computed embeddings by key; raises ``DataError`` when absent.

    Examples
    --------
    See :func:`embed_dataset`; an unknown key names the step to run:

    >>> import tempfile
    >>> from clipcleaner_core.embed import load_embedding
    >>> load_embedding("0123abcd", cache_root=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.DataError: no complete embeddings with key '0123abcd' under ...
    """
    root = Path(cache_root) if cache_root is not None else cache_dir()
    embedding = _load_complete(key, root / "embeddings" / key)
    if embedding is None:
        raise DataError(f"no complete embeddings with key {key!r} under {root / 'embeddings'}; "
                        "run the embed step (clipcleaner embed ...) first")
    return embedding


def embed_texts(
    encoder: Encoder | EncoderSpec,
    texts: list[str],
    *,
    cache_root: str | os.PathLike | None = None,
    allow_download: bool = False,
) -> np.ndarray:
    """(M, D) float32 L2-normalised text features of ``texts``, cached by encoder identity + texts.

    Raises ``CLIPCleanerError`` when the encoder has no text tower (``pixels``).

    Examples
    --------
    With a CLIP model, ``embed_texts(EncoderSpec(model="ViT-B-32", pretrained="openai"), prompts)``
    gives one unit row per prompt (cached). The pixels encoder has no text tower and says so:

    >>> import tempfile
    >>> from clipcleaner_core.embed import embed_texts
    >>> from clipcleaner_core.encoders import EncoderSpec
    >>> embed_texts(EncoderSpec(model="pixels"), ["a photo of a cat."], cache_root=tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.CLIPCleanerError: encoder 'pixels 16x16' has no text tower, so it cannot embed prompts; zero-shot scores need a CLIP model (e.g. --model ViT-B-32 --pretrained openai)
    """
    texts = [str(t) for t in texts]
    spec = encoder.spec if isinstance(encoder, Encoder) else encoder
    _fetch_if_allowed(spec, allow_download)
    identity = encoder.identity() if isinstance(encoder, Encoder) else encoder_identity(spec)
    root = Path(cache_root) if cache_root is not None else cache_dir()
    path = root / "text_embeddings" / f"{atomic.hash_json({'encoder': identity, 'texts': texts})[:24]}.npy"
    if atomic.read_sidecar(path):
        with contextlib.suppress(OSError, ValueError):
            return np.load(path)
    if not isinstance(encoder, Encoder):
        encoder = _encoder(spec, allow_download)
    features = encoder.encode_text(texts).astype(np.float32, copy=False)
    try:
        atomic.save_npy(path, features)
        atomic.write_sidecar(path, {"encoder": identity, "texts": texts, "created": time.time()})
    except storage.StorageError as exc:  # the features are right here; only the cache copy failed
        logger.warning("text features not cached: %s", exc)
    return features


# ---- internals -----------------------------------------------------------------------------
_LOADED: dict = {}


def _encoder(spec: EncoderSpec, allow_download: bool) -> Encoder:
    """The most recently used encoder is kept, so image and text embedding share one load.

    It is keyed by the spec and the weights' identity, so a replaced checkpoint file is reloaded.
    """
    cache_key = (spec, atomic.hash_json(encoder_identity(spec)))
    if cache_key not in _LOADED:
        _LOADED.clear()
        _LOADED[cache_key] = load_encoder(spec, allow_download=allow_download)
    return _LOADED[cache_key]


def _fetch_if_allowed(spec: EncoderSpec, allow_download: bool) -> None:
    """Download missing weights first when allowed, so the cache key can be computed."""
    if allow_download and spec.model != "pixels":
        resolve_weights(spec.model, spec.pretrained, allow_download=True)


def _validate(dataset, batch_size, num_workers, chunk_size, dtype="float32") -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"unknown features dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name!r} has no samples to embed")
    for name, value, low in (("batch_size", batch_size, 1), ("chunk_size", chunk_size, 1),
                             ("num_workers", 0 if num_workers is None else num_workers, 0)):
        if not isinstance(value, int) or value < low:
            raise CLIPCleanerError(f"{name} must be an integer >= {low}, got {value!r}")


def _load_complete(key: str, folder: Path, *, reused: bool = True) -> EmbeddingSet | None:
    """The embeddings in ``folder`` if the set is complete: features, valid and a sidecar that
    matches them. Anything less is treated as absent (and cleared by the next computing run)."""
    features_path = folder / FEATURES_NAME
    meta = atomic.read_sidecar(features_path)
    if not meta or not (folder / VALID_NAME).exists():
        return None
    try:
        features = np.load(features_path, mmap_mode="r")
        valid = np.load(folder / VALID_NAME)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable embeddings in %s (%s)", folder, exc)
        return None
    if features.shape != (meta.get("n"), meta.get("dim")) or valid.shape != (meta.get("n"),) \
            or features.dtype != np.dtype(meta.get("dtype", "float32")):
        logger.warning("ignoring embeddings in %s: their files do not match their sidecar", folder)
        return None
    bad = pd.DataFrame(meta.get("bad_files", []), columns=list(BAD_FILE_COLUMNS))
    return EmbeddingSet(
        key=key, folder=folder, image_features=features, valid=valid,
        bad_files=bad.astype({"index": "int64"}), meta={**meta, "reused": reused},
    )


@contextlib.contextmanager
def _lock(folder: Path):
    """The folder's writer lock: a second writer waits here, then reuses the first one's result."""
    from filelock import FileLock

    lock = FileLock(str(folder / ".lock"))
    try:
        lock.acquire()
    except OSError as exc:
        raise (storage.storage_error(exc, folder, what="the embeddings' lock file", target_only=True)
               or exc) from exc
    try:
        yield
    finally:
        lock.release()


def _clear_incomplete(folder: Path) -> None:
    """Remove what a killed run left in ``folder``: its temporary files and an unfinished set
    (features or valid without a matching sidecar). The resumable chunks are kept."""
    storage.remove_stale_temps(folder)
    storage.remove_stale_temps(folder / "chunks")
    for name in (FEATURES_NAME, VALID_NAME):
        if (folder / name).exists():
            logger.info("removing the unfinished %s in %s", name, folder)
            atomic.remove_artifact(folder / name)


def _compute(dataset, spec, folder, key, options, dtype, progress, cancel) -> None:
    start = time.perf_counter()
    chunk_size, n_chunks = plan_chunks(folder, len(dataset), options["chunk_size"])
    encoder = _encoder(spec, allow_download=False)
    pending = pending_chunks(folder, n_chunks)
    check_space(folder, len(dataset), encoder.dim, chunk_size, pending, dtype)
    encode_pending(dataset, encoder, folder, pending, chunk_size, options, progress, cancel)
    meta = describe(dataset, spec, encoder, key, options, chunk_size, dtype,
                    seconds=time.perf_counter() - start, world_size=1)
    _assemble(folder, folder / "chunks", n_chunks, encoder.dim, dataset, meta)


def plan_chunks(folder: Path, n: int, chunk_size: int) -> tuple[int, int]:
    """(chunk size, number of chunks) of ``folder``: a resumed run keeps its first run's size."""
    from clipcleaner_core.embed_loader import chunk_plan

    size = chunk_plan(folder / "chunks", n, chunk_size)
    return size, math.ceil(n / size)


def pending_chunks(folder: Path, n_chunks: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
    """The chunks of ``rank`` (``c % world_size == rank``) not yet complete, whoever wrote the rest."""
    from clipcleaner_core.embed_loader import read_chunk

    return [c for c in range(rank, n_chunks, world_size) if read_chunk(folder / "chunks", c) is None]


def encode_pending(dataset, encoder, folder, pending, chunk_size, options, progress, cancel,
                   *, rank: int = 0) -> None:
    from clipcleaner_core import embed_loader

    if not pending:
        return
    num_workers = options["num_workers"]
    if num_workers is None:
        num_workers = _default_workers(dataset, encoder, options["batch_size"])
    logger.info("rank %d: embedding %d chunks of %s with %s (%d workers)", rank, len(pending),
                dataset.name, encoder.name, num_workers)
    embed_loader.encode_chunks(dataset, encoder, folder / "chunks", pending, chunk_size=chunk_size,
                               batch_size=options["batch_size"], num_workers=num_workers,
                               progress=progress, cancel=cancel, rank=rank)


def _default_workers(dataset, encoder, batch_size: int) -> int:
    """DataLoader workers: one per core (at most 8), except where starting them (each imports torch,
    ~1-2 s) costs more than the work: one batch, or in-memory images for the pixels encoder
    (a resize per image: the demo embeds in 0.3 s in-process, 2 s with two workers)."""
    from clipcleaner_core.encoders import PixelEncoder

    if len(dataset) <= batch_size or (dataset.images is not None and isinstance(encoder, PixelEncoder)):
        return 0
    return min(8, os.cpu_count() or 1)


def describe(dataset, spec, encoder, key, options, chunk_size, dtype, *, seconds, world_size) -> dict:
    """The sidecar of the features, less what assembling adds (validity, bad files, chunk ranks)."""
    return {
        "key": key, "format": FORMAT_VERSION, "n": len(dataset), "dim": encoder.dim, "dtype": dtype,
        "dataset": {"content_fingerprint": dataset.content_fingerprint(), "name": dataset.name,
                    "kind": dataset.kind, "spec": dataset.spec},
        "encoder": encoder.name, "encoder_spec": spec.to_dict(), "identity": encoder.identity(),
        "has_text": encoder.has_text, "chunk_size": chunk_size, "options": options,
        "world_size": world_size, "seconds": round(seconds, 3), "created": time.time(),
    }


def check_space(folder: Path, n: int, dim: int, chunk_size: int, pending: list[int], dtype: str) -> None:
    """Fail before encoding when the chunks still to write (float32) plus features.npy (``dtype``)
    cannot fit (both are on disk at once while features.npy is assembled)."""
    pending_rows = sum(min(n, (c + 1) * chunk_size) - c * chunk_size for c in pending)
    chunk_row, row = dim * 4, dim * np.dtype(dtype).itemsize
    needed = pending_rows * chunk_row + n * row + n + 2 * atomic.NPY_HEADER_BYTES
    storage.check_free_space(folder, needed, what=f"the embeddings of {n} images as chunks, then "
                            f"as features.npy ({n} x {dim} {dtype})")


def _npy_header(shape: tuple[int, int], dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
        "shape": shape})
    return buffer.getvalue()


def _assemble(folder: Path, chunks: Path, n_chunks: int, dim: int, dataset, meta: dict) -> None:
    """Concatenate the chunk files into features.npy / valid.npy, then write the sidecar last.

    features.npy is preallocated and written with ordinary writes (never through a memory map),
    so a full disk is a :class:`~clipcleaner_core.storage.StorageError`, not a SIGBUS.
    """
    from clipcleaner_core.embed_loader import chunk_rank, read_chunk

    n = len(dataset)
    valid = np.ones(n, dtype=bool)
    bad_rows, ranks = [], []
    dtype = np.dtype(meta.get("dtype", "float32")).newbyteorder("<")
    header = _npy_header((n, dim), dtype)
    size = len(header) + n * dim * dtype.itemsize
    with atomic.atomic_path(folder / FEATURES_NAME, size=size, preallocate=True) as tmp:
        with open(tmp, "r+b") as handle:
            handle.write(header)
            for chunk in range(n_chunks):
                complete = read_chunk(chunks, chunk)
                if complete is None:
                    raise CLIPCleanerError(f"chunk {chunk} under {chunks} is missing or incomplete; "
                                           "run the same command again to embed it")
                features, bad = complete
                handle.write(np.ascontiguousarray(features, dtype=dtype).tobytes())
                ranks.append(chunk_rank(chunks, chunk))
                for index, reason in sorted(bad.items()):
                    valid[index] = False
                    bad_rows.append({"index": index, "path": dataset.paths[index], "reason": reason})
            if handle.tell() != size:
                raise CLIPCleanerError(f"the chunks under {chunks} hold {handle.tell() - len(header)} "
                                       f"bytes of features, expected {n * dim * dtype.itemsize}; "
                                       f"delete {folder} and embed again")
    atomic.save_npy(folder / VALID_NAME, valid)
    meta.update(n_valid=int(valid.sum()), bad_files=bad_rows, chunk_ranks=ranks)
    atomic.write_sidecar(folder / FEATURES_NAME, meta)
    shutil.rmtree(chunks, ignore_errors=True)
    if bad_rows:
        logger.warning("%d image(s) could not be decoded and are marked invalid", len(bad_rows))


def _register(root: Path, embedding: EmbeddingSet, dataset) -> None:
    import sqlite3

    from clipcleaner_core.store import Catalogue

    spec = embedding.meta.get("encoder_spec", {})
    try:
        catalogue = Catalogue(root / "catalogue.sqlite")
        content_fp = embedding.meta["dataset"]["content_fingerprint"]
        catalogue.register_dataset(dataset, fingerprint=content_fp)
        catalogue.register_embedding(
            embedding.key, dataset_fp=content_fp,
            model=spec.get("model"), pretrained=spec.get("pretrained"), dim=embedding.dim,
            n=len(embedding), path=embedding.folder,
        )
    except (sqlite3.Error, CLIPCleanerError) as exc:  # the catalogue is an index; the files are the truth
        logger.warning("could not record embeddings %s in the catalogue: %s", embedding.key, exc)


__all__ = ["EmbeddingSet", "embed_dataset", "embed_texts", "embedding_key", "load_embedding"]
