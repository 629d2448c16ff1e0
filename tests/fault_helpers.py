"""Real faults for tests: a child process killed with SIGKILL at a chosen write, and a tiny disk.

``run_paused(code, pause_at)`` runs ``code`` in a fresh Python process (its own session, so it
cannot signal the test's process group) whose ``os.replace`` stops
(forever) just before or just after the n-th move onto a given file name; the test then kills it
with SIGKILL, which is exactly a ``kill -9`` at that instant of the write sequence.

``small_disk(folder, size_kib, argv)`` runs ``argv`` with a fresh tmpfs of ``size_kib`` mounted on
``folder`` (in a private user and mount namespace, so no privileges are needed). The mount lives
only as long as the command: the command itself checks what it needs and prints the result.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT_S = 300

_PAUSE_HOOK = '''
import os as _os, time as _time
_WHEN, _NAME, _NTH = _os.environ["PAUSE_AT"].split(":")
_seen = [0]
_real_replace = _os.replace

def _pause():
    open(_os.environ["PAUSE_MARKER"], "w").close()
    while True:
        _time.sleep(3600)

def _replace(src, dst, *args, **kwargs):
    hit = _os.path.basename(_os.fspath(dst)) == _NAME
    if hit:
        _seen[0] += 1
    hit = hit and _seen[0] == int(_NTH)
    if hit and _WHEN == "before":
        _pause()
    result = _real_replace(src, dst, *args, **kwargs)
    if hit and _WHEN == "after":
        _pause()
    return result

_os.replace = _replace
'''


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_paused(code: str, pause_at: str, workdir: Path, *args: str) -> None:
    """Run ``code`` until it pauses at ``pause_at`` ("before|after:<file name>:<n>"), then kill -9.

    Fails the test when the child ends before reaching that point.
    """
    marker = workdir / f"paused-{os.getpid()}-{time.monotonic_ns()}"
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSE_HOOK + code, *args], cwd=ROOT,
        env=child_env(PAUSE_AT=pause_at, PAUSE_MARKER=marker),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not marker.exists():
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(f"the child ended (rc {child.returncode}) before pausing at {pause_at}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child never paused at {pause_at}")
        time.sleep(0.02)  # polling for the marker, not waiting for an outcome
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    marker.unlink()


@functools.lru_cache(maxsize=1)
def small_disks_available() -> bool:
    """True when an unprivileged user+mount namespace can mount a tmpfs here."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            done = subprocess.run(
                ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                 'mount -t tmpfs -o size=64k tmpfs "$0"', folder],
                capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


def small_disk(folder: Path, size_kib: int, argv: list[str], **env) -> subprocess.CompletedProcess:
    """Run ``argv`` with a ``size_kib`` tmpfs mounted on ``folder``; skip where impossible."""
    if not small_disks_available():
        pytest.skip("cannot mount a small tmpfs here (unprivileged user namespaces are off); "
                    "the failing-writer tests cover the same paths")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f'mount -t tmpfs -o size={int(size_kib)}k tmpfs "$0" && exec "$@"', str(folder), *argv],
        cwd=ROOT, env=child_env(**env), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
