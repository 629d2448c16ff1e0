"""Embed on every local GPU at once: one process per GPU through ``torchrun``, watched from here.

:func:`embed_on_local_gpus` starts ``torchrun --standalone --nproc-per-node G -m clipcleaner_core
embed ...`` (see :mod:`clipcleaner_core.embed_sharded`) in its own process group, reports each
rank's progress (every rank keeps ``rank<R>.json`` in a progress folder up to date) and cancels
the whole group on request. The result lands in the same cache as a single-process run, so the
caller then opens it by key.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clipcleaner_core import atomic
from clipcleaner_core.errors import Cancelled, CLIPCleanerError
from clipcleaner_core.progress import Cancel, Progress

logger = logging.getLogger(__name__)

POLL_S = 0.5
WRITE_EVERY_S = 0.5
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class RankProgress:
    """One rank's share of the work: ``done`` of ``total`` images at ``rate`` images/s."""

    rank: int
    done: int
    total: int
    rate: float | None

    @property
    def seconds_left(self) -> float | None:
        if not self.rate or self.total <= self.done:
            return None if self.total > self.done else 0.0
        return (self.total - self.done) / self.rate


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def can_launch(dataset, spec) -> bool:
    """Whether ``dataset`` can be reopened by a child process from its spec (not uploaded or
    precomputed data) and ``spec`` is expressible on the command line."""
    return bool(dataset.spec) and dataset.kind != "embeddings" and spec.precision == "auto"


def rank_progress_writer(folder, rank: int) -> Progress:
    """A :data:`~clipcleaner_core.progress.Progress` keeping ``<folder>/rank<rank>.json`` current
    (at most every half second, and always at the end); a no-op when ``folder`` is None."""
    if folder is None:
        return lambda stage, done, total, rate=None: None
    path = Path(folder) / f"rank{rank}.json"
    last = [0.0]

    def write(stage: str, done: int, total: int, rate: float | None = None) -> None:
        now = time.monotonic()
        if now - last[0] < WRITE_EVERY_S and done < total:
            return
        last[0] = now
        with contextlib.suppress(OSError):  # progress is a courtesy; the embedding goes on
            atomic.write_json(path, {"rank": rank, "done": int(done), "total": int(total),
                                     "rate": None if rate is None else float(rate)})

    return write


def read_rank_progress(folder, nproc: int) -> list[RankProgress]:
    """The latest progress of ranks 0..nproc-1 (a rank that has not reported yet shows 0 of 0)."""
    ranks = []
    for rank in range(nproc):
        try:
            row = json.loads((Path(folder) / f"rank{rank}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            row = {"done": 0, "total": 0, "rate": None}
        ranks.append(RankProgress(rank, int(row["done"]), int(row["total"]), row.get("rate")))
    return ranks


def embed_command(dataset, spec, *, nproc: int, batch_size: int, progress_dir, device: str) -> list[str]:
    """The ``torchrun`` command line that embeds ``dataset`` with ``spec`` on ``nproc`` processes."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "clipcleaner_core", "embed", "--data", str(dataset.spec), "--split", dataset.split,
            "--model", spec.model, "--device", device, "--batch-size", str(batch_size),
            "--progress-dir", str(progress_dir)]
    if dataset.kind != "demo":
        argv += ["--format", dataset.kind]
    if spec.pretrained:
        argv += ["--pretrained", spec.pretrained]
    elif spec.model != "pixels" and not spec.model.startswith(("hf-hub:", "local-dir:")):
        argv += ["--random-weights"]
    return argv


def embed_on_local_gpus(
    dataset,
    spec,
    *,
    nproc: int | None = None,
    batch_size: int = 64,
    cache_root=None,
    device: str = "cuda",
    progress: Progress | None = None,
    on_ranks: Callable[[list[RankProgress]], None] | None = None,
    cancel: Cancel | None = None,
):
    """Embed ``dataset`` with one ``torchrun`` process per local GPU; returns the EmbeddingSet.

    Parameters
    ----------
    nproc
        processes (default: every visible GPU).
    device
        ``"cuda"`` (one GPU per process) or ``"cpu"`` (gloo; for machines without GPUs).
    progress
        ``progress("embed", done, total, images_per_s)`` summed over the ranks.
    on_ranks
        called with every rank's :class:`RankProgress` at each poll, and once more with
        the final figures when the job succeeded.
    cancel
        polled; True stops the whole job (complete chunks are kept) and raises
        :class:`~clipcleaner_core.errors.Cancelled`.
    """
    from clipcleaner_core.embed import embedding_key, load_embedding
    from clipcleaner_core.paths import cache_dir

    nproc = nproc or local_gpu_count()
    if nproc < 1 or not can_launch(dataset, spec):
        raise CLIPCleanerError("this dataset or encoder cannot be embedded by a torchrun job (uploaded or "
                               "precomputed data, or a non-default precision); embed it in this process")
    root = Path(cache_root) if cache_root is not None else cache_dir()
    with tempfile.TemporaryDirectory(prefix="clipcleaner-embed-") as tmp:
        argv = embed_command(dataset, spec, nproc=nproc, batch_size=batch_size, progress_dir=tmp,
                             device=device)
        log_path = Path(tmp) / "torchrun.log"
        with open(log_path, "w", encoding="utf-8") as log:
            child = subprocess.Popen(argv, env={**os.environ, "CLIPCLEANER_CACHE": str(root)},
                                     stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
            logger.info("embedding on %d processes: %s", nproc, " ".join(argv))
            try:
                _watch(child, tmp, nproc, progress, on_ranks, cancel)
            finally:
                _stop(child)
        if child.returncode != 0:
            raise CLIPCleanerError(_failure(log_path.read_text(encoding="utf-8", errors="replace"),
                                            child.returncode))
        if on_ranks is not None:  # the final figures (each rank writes them as it finishes)
            on_ranks(read_rank_progress(tmp, nproc))
    return load_embedding(embedding_key(dataset, spec), cache_root=root)


def _watch(child, folder, nproc, progress, on_ranks, cancel) -> None:
    while child.poll() is None:
        if cancel is not None and cancel():
            _stop(child)
            raise Cancelled("Embedding cancelled: the chunks every GPU finished are kept; run it again "
                            "to resume from there.")
        ranks = read_rank_progress(folder, nproc)
        if on_ranks is not None:
            on_ranks(ranks)
        if progress is not None:
            rates = [r.rate for r in ranks if r.rate]
            progress("embed", sum(r.done for r in ranks), sum(r.total for r in ranks),
                     sum(rates) if rates else None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=POLL_S)


def _stop(child) -> None:
    """SIGTERM to torchrun's whole process group (it stops its workers), SIGKILL after a grace."""
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _failure(log: str, code: int) -> str:
    """The first ``error:`` line the ranks printed (they all name the failed rank), else the tail."""
    errors = [line[len("error: "):] for line in log.splitlines() if line.startswith("error: ")]
    if errors:
        return errors[0]
    return f"the torchrun embedding job exited with status {code}: {' '.join(log.split()[-60:])}"


__all__ = ["RankProgress", "can_launch", "embed_on_local_gpus", "local_gpu_count", "read_rank_progress"]
