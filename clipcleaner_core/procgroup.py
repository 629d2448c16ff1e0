"""Process-group plumbing for the job runner: who is still alive, reaping, killing.

On Linux the members of a group are read from ``/proc`` so that zombies (exited, not yet reaped by
their parent) do not count as running; elsewhere ``os.killpg(pgid, 0)`` is the only test.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator

_PR_SET_CHILD_SUBREAPER = 36
_PROC = "/proc"


def set_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux), so it can reap them."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return False


def reap_children() -> Iterator[tuple[int, int]]:
    """Collect every exited child without blocking; yields (pid, wait status)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def group_exists(pgid: int) -> bool:
    """True while any process of the group exists, zombies included (``os.killpg(pgid, 0)``)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) pids in process group ``pgid``; None where ``/proc`` is unavailable."""
    if not os.path.isdir(_PROC):
        return None
    members = []
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"{_PROC}/{entry}/stat", "rb") as handle:
                stat = handle.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def group_alive(pgid: int, *, exclude: int | None = None) -> bool:
    """True while a live process of the group remains (other than ``exclude``)."""
    if not group_exists(pgid):
        return False
    members = group_members(pgid)
    if members is None:
        return exclude is None
    return any(pid != exclude for pid in members)


def kill_group_members(pgid: int, *, exclude: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to every live process of the group except ``exclude``."""
    for pid in group_members(pgid) or []:
        if pid != exclude:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
