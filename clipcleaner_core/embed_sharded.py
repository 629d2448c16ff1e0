"""Embedding under ``torchrun``: the cache's chunks shared out between the ranks of one job.

Chunk ``c`` is embedded by rank ``c % world_size``; this static split lets every rank know its work
without coordination, and a rank skips its chunks that are already complete, whoever wrote them, so
a killed job resumes. The steps, each ending in a collective so a failure reaches every rank:

1. rank 0 alone takes the cache folder's file lock (another job waits on it), clears what a killed
   run left, fixes the chunk size and checks the free space; every rank learns the plan (or that
   the set is already cached, or rank 0's error);
2. every rank embeds its pending chunks into the shared ``chunks/`` folder (each chunk's JSON names
   the rank that wrote it); the ranks exchange their outcomes with ``all_gather_object``, so a failed
   rank is named on every rank and no sidecar is written;
3. rank 0 assembles ``features.npy`` exactly as a single process does (so the result is the same,
   bit for bit on the CPU), writes the sidecar with ``world_size`` and ``chunk_ranks`` and registers
   the catalogue entry; then every rank opens the same :class:`~clipcleaner_core.embed.EmbeddingSet`.

The folder must be on a file system every node sees (one node: any local folder).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from clipcleaner_core import embed, storage
from clipcleaner_core.errors import CLIPCleanerError

logger = logging.getLogger(__name__)


def embed_sharded(dataset, spec, group, *, root: Path, options: dict, dtype: str, progress, cancel,
                  allow_download: bool):
    """:func:`clipcleaner_core.embed.embed_dataset` for one rank of ``group`` (a
    :class:`~clipcleaner_core.train.distributed.Distributed` with ``world_size > 1``)."""
    start = time.perf_counter()
    with contextlib.ExitStack() as held:
        plan = group.run_on_main(
            lambda: _plan_on_main(dataset, spec, root, options, dtype, allow_download, held),
            what="preparing the embeddings' cache folder")
        folder = Path(plan["folder"])
        if plan["cached"]:
            return _open(plan["key"], folder)
        encoded = group.run_everywhere(
            lambda: _encode_own(dataset, spec, group, plan, options, dtype, progress, cancel,
                                allow_download),
            what="embedding the chunks")
        group.run_on_main(
            lambda: _assemble_on_main(dataset, spec, group, plan, options, dtype, encoded, start),
            what="assembling features.npy")
    embedding = group.run_everywhere(lambda: _open(plan["key"], folder, reused=False),
                                     what="opening the assembled embeddings")
    if group.is_main:
        embed._register(root, embedding, dataset)
    group.barrier()  # the catalogue entry exists on return, on every rank
    return embedding


def _plan_on_main(dataset, spec, root, options, dtype, allow_download, held: contextlib.ExitStack) -> dict:
    embed._fetch_if_allowed(spec, allow_download)
    key = embed.embedding_key(dataset, spec, dtype=dtype)
    folder = root / "embeddings" / key
    plan = {"key": key, "folder": str(folder), "cached": True}
    if embed._load_complete(key, folder) is not None:
        return plan
    storage.make_folder(folder, what=f"the embeddings of {dataset.name!r}")
    held.enter_context(embed._lock(folder))  # held by rank 0 until the set is assembled
    if embed._load_complete(key, folder) is not None:
        return plan
    embed._clear_incomplete(folder)
    chunk_size, n_chunks = embed.plan_chunks(folder, len(dataset), options["chunk_size"])
    encoder = embed._encoder(spec, allow_download=False)
    embed.check_space(folder, len(dataset), encoder.dim, chunk_size,
                      embed.pending_chunks(folder, n_chunks), dtype)
    return {**plan, "cached": False, "chunk_size": chunk_size, "n_chunks": n_chunks}


def _encode_own(dataset, spec, group, plan, options, dtype, progress, cancel, allow_download) -> int:
    """Embed this rank's pending chunks; returns how many it embedded."""
    if not group.is_main:
        embed._fetch_if_allowed(spec, allow_download)  # a node without a shared weights cache
        key = embed.embedding_key(dataset, spec, dtype=dtype)
        if key != plan["key"]:
            raise CLIPCleanerError(
                f"this rank's dataset or encoder weights differ from rank 0's (embedding key {key} "
                f"vs {plan['key']}); every node must see the same files")
    folder, chunk_size, n_chunks = Path(plan["folder"]), plan["chunk_size"], plan["n_chunks"]
    pending = embed.pending_chunks(folder, n_chunks, rank=group.rank, world_size=group.world_size)
    report = _rank_progress(progress, len(dataset), chunk_size, n_chunks, group, pending)
    if not pending:  # more ranks than chunks, or a resumed job whose share is done
        if report is not None:
            report("embed", len(dataset), len(dataset), None)
        return 0
    encoder = embed._encoder(spec, allow_download=False)
    embed.encode_pending(dataset, encoder, folder, pending, chunk_size, options, report, cancel,
                         rank=group.rank)
    return len(pending)


def _rank_progress(progress, n, chunk_size, n_chunks, group, pending):
    """``progress("embed", done, total, rate)`` over this rank's own rows (its share of the chunks)."""
    if progress is None:
        return None

    def rows(chunks):
        return sum(min(n, (c + 1) * chunk_size) - c * chunk_size for c in chunks)

    total = rows(range(group.rank, n_chunks, group.world_size))
    already = total - rows(pending)
    outside = n - rows(pending)

    def report(stage: str, done: int, _n: int, rate: float | None = None) -> None:
        progress(stage, already + done - outside, total, rate)

    return report


def _assemble_on_main(dataset, spec, group, plan, options, dtype, encoded: int, start: float) -> None:
    folder = Path(plan["folder"])
    encoder = embed._encoder(spec, allow_download=False)
    meta = embed.describe(dataset, spec, encoder, plan["key"], options, plan["chunk_size"], dtype,
                          seconds=time.perf_counter() - start, world_size=group.world_size)
    embed._assemble(folder, folder / "chunks", plan["n_chunks"], encoder.dim, dataset, meta)
    logger.info("rank 0 assembled %s from %d chunks (%d embedded by rank 0)", folder,
                plan["n_chunks"], encoded)


def _open(key: str, folder: Path, *, reused: bool = True):
    embedding = embed._load_complete(key, folder, reused=reused)
    if embedding is None:
        raise CLIPCleanerError(f"the embeddings in {folder} are incomplete after rank 0 "
                                     "assembled them; run the same command again")
    return embedding
