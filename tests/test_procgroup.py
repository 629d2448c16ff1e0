"""Process groups of background jobs: liveness ignores zombies, killing reaches every member."""
import os
import signal
import subprocess
import sys
import time

from clipcleaner_core import procgroup


def _group_of_two():
    """A shell in its own session that starts a second sleeper: two live members."""
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & exec sleep 30"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(procgroup.group_members(proc.pid) or []) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def test_group_members_lists_live_processes_and_kill_reaches_them_all():
    proc = _group_of_two()
    try:
        members = procgroup.group_members(proc.pid)
        assert proc.pid in members and len(members) == 2
        assert procgroup.group_alive(proc.pid)
        assert procgroup.group_alive(proc.pid, exclude=proc.pid)  # the background sleeper
        procgroup.kill_group_members(proc.pid)
        proc.wait(timeout=10)
        assert procgroup.wait_group_gone(proc.pid, timeout=10, settle=0.5)
        assert not procgroup.group_alive(proc.pid)
    finally:
        procgroup.signal_group(proc.pid, signal.SIGKILL)


def test_a_zombie_does_not_count_as_alive():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 10
    while procgroup.group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert procgroup.group_members(proc.pid) == []       # exited, not reaped yet
    assert procgroup.group_exists(proc.pid)               # the zombie still holds the group
    assert not procgroup.group_alive(proc.pid)
    assert proc.pid in dict(procgroup.reap_children()) or proc.poll() is not None
    assert not procgroup.pid_alive(proc.pid)


def test_tail_file_reads_only_the_end(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert procgroup.tail_file(log, 3) == "line 9997\nline 9998\nline 9999"
    assert procgroup.tail_file(log, 2, max_bytes=12) == "line 9999"
    assert procgroup.tail_file(tmp_path / "missing.log") == ""


def test_signals_to_a_vanished_group_are_harmless():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    procgroup.signal_group(proc.pid, signal.SIGTERM)
    procgroup.kill_group_members(proc.pid)
    assert not procgroup.group_exists(proc.pid)
    assert os.getpid() != proc.pid
