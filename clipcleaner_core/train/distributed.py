"""DDP plumbing: one process per device under ``torchrun``, a no-op for a single process.

``torchrun --nproc_per_node=N`` sets RANK / WORLD_SIZE / LOCAL_RANK; the process group uses gloo on
CPU and nccl on GPU. Every rank computes the same sampling order from the seed and keeps its shard;
only rank 0 writes files.

:meth:`Distributed.run_everywhere` and :meth:`Distributed.run_on_main` turn an exception on one rank
into the same :class:`RankError` on every rank (through a collective, so nobody waits forever for a
rank that already gave up), naming the rank(s) and host(s) that failed.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from clipcleaner_core.errors import Cancelled, CLIPCleanerError

T = TypeVar("T")


class RankError(CLIPCleanerError):
    """A step failed on one or more ranks of a ``torchrun`` job; raised on every rank.

    Attributes:
        failures: ``{rank: message}`` of the ranks that failed.
    """

    def __init__(self, message: str, failures: dict[int, str]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str, *, timeout: timedelta | None = None) -> "Distributed":
        """Join the process group described by the torchrun environment, if any.

        ``timeout`` bounds every collective (None: torch's default); a job whose ranks may wait
        long for one another (rank 0 waiting for another job's lock) passes a longer one.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is visible; "
                               "use --device cpu or auto.")
        torch_device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(torch_device)
        owns = False
        if world_size > 1 and not dist.is_initialized():
            extra = {"timeout": timeout} if timeout is not None else {}
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", **extra)
            owns = True
        if world_size > 1 and not use_cuda:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        return cls(rank, world_size, local_rank, torch_device, owns)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) ``tensor`` in place across ranks; returns it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is True on any rank (every rank gets the same answer)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def run_everywhere(self, step: Callable[[], T], *, what: str) -> T:
        """``step()`` on every rank; if it raised on any rank, every rank raises :class:`RankError`.

        The outcome of each rank is exchanged with ``all_gather_object`` (a collective, not files),
        so the ranks that succeeded learn at once which rank failed and why. A single process
        just runs ``step``.
        """
        if not self.enabled:
            return step()
        result, error = _attempt(step)
        self._raise_failures(self._gather(error), what)
        return result

    def run_on_main(self, step: Callable[[], T], *, what: str) -> T:
        """``step()`` on rank 0 only; its result (picklable) or its failure reaches every rank."""
        if not self.enabled:
            return step()
        result, error = _attempt(step) if self.is_main else (None, None)
        box = [(result, error)]
        dist.broadcast_object_list(box, src=0)
        result, error = box[0]
        self._raise_failures([error] + [None] * (self.world_size - 1), what)
        return result

    def _gather(self, error) -> list:
        outcomes: list = [None] * self.world_size
        dist.all_gather_object(outcomes, error)
        return outcomes

    def _raise_failures(self, outcomes: list, what: str) -> None:
        failures = {rank: outcome for rank, outcome in enumerate(outcomes) if outcome is not None}
        if not failures:
            return
        details = "; ".join(f"rank {rank} on {error['host']}: {error['message']}"
                            for rank, error in failures.items())
        names = ", ".join(str(rank) for rank in failures)
        plural = "s" if len(failures) > 1 else ""
        message = (f"{what} failed on rank{plural} {names} of {self.world_size} "
                   f"(this is rank {self.rank}): {details}")
        if all(error["cancelled"] for error in failures.values()):
            raise Cancelled(message)
        raise RankError(message, {rank: error["message"] for rank, error in failures.items()})

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _attempt(step: Callable[[], T]) -> tuple[T | None, dict | None]:
    """(result, None) or (None, a picklable description of the exception ``step`` raised)."""
    try:
        return step(), None
    except Exception as exc:  # noqa: BLE001 - every failure must reach the other ranks
        message = str(exc) if isinstance(exc, CLIPCleanerError) else f"{type(exc).__name__}: {exc}"
        return None, {"message": " ".join(message.split()), "host": socket.gethostname(),
                      "cancelled": isinstance(exc, Cancelled)}
