"""Process-group plumbing for the job runner: who is still alive, reaping, killing; log tails.

On Linux the members of a group are read from ``/proc`` so that zombies (exited, not yet reaped by
their parent) do not count as running; elsewhere ``os.killpg(pgid, 0)`` is the only test.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
        if not entry.isdecimal():
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


def tail_file(path: Path, lines: int = 50, *, max_bytes: int = 1 << 20) -> str:
    """The last ``lines`` lines of a text file, reading at most ``max_bytes`` from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - max_bytes)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    text_lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and text_lines:
        text_lines = text_lines[1:]  # the read began inside a line: never show a fragment
    return "\n".join(text_lines[-lines:])


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float, *, settle: float = 5.0) -> bool:
    """Wait until no live process of the group remains (then briefly for zombies to be reaped)."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    deadline = time.monotonic() + settle
    while group_exists(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
