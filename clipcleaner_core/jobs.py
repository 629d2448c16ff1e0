"""Background jobs: training runs that outlive the browser tab and the app process.

A job is a command line (``argv``) recorded in the SQLite catalogue. Jobs wait in a queue so two
launches never fight over one device: at most ``max_concurrent`` run at a time (1 by default,
``$CLIPCLEANER_MAX_JOBS`` to change it). Starting a job spawns a small supervisor,
``python -m clipcleaner_core.jobs supervise <job_id>``, in a new session (its own process group, so
it survives the app and a Ctrl-C in the app's terminal). The supervisor starts the real command in
that same group with its output going to ``<run_dir>/job.log``, writes a heartbeat to
``<run_dir>/job.json`` every second, records the exit code in the catalogue, and starts the next
queued job when its own ends.

Cancelling sends SIGTERM to the whole group (command, DataLoader workers, any grandchildren), then
SIGKILL after a grace period, and waits until no process of the group remains. ``reconcile()`` (run
at app start-up) marks failed the jobs whose supervisor vanished (pid gone or heartbeat stale),
keeping their logs.

Job status values: "queued" -> "starting" -> "running" -> "done" | "failed" | "cancelled"
("cancelling" while a cancel is in progress).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from clipcleaner_core.atomic import write_json
from clipcleaner_core.errors import CLIPCleanerError, ConfigError
from clipcleaner_core.procgroup import (group_alive, kill_group_members, pid_alive, reap_children, set_subreaper,
                                        signal_group, tail_file, wait_group_gone)
from clipcleaner_core.paths import PROJECT_ROOT, cache_dir

log = logging.getLogger(__name__)

ACTIVE = ("starting", "running", "cancelling")
FINISHED = ("done", "failed", "cancelled")
HEARTBEAT_S = 1.0
STALE_AFTER_S = 30.0
GRACE_S = 10.0
LOG_NAME = "job.log"
HEARTBEAT_NAME = "job.json"
MAX_JOBS_ENV = "CLIPCLEANER_MAX_JOBS"


@dataclass(frozen=True)
class JobInfo:
    """One job as the catalogue and its run folder describe it.

    ``heartbeat`` is the supervisor's last sign of life (unix seconds) or None before it started.
    """

    id: int
    kind: str
    name: str | None
    status: str
    argv: tuple[str, ...]
    run_dir: Path
    pid: int | None
    exit_code: int | None
    created: float | None
    started: float | None
    ended: float | None
    heartbeat: float | None
    error: str | None

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class JobRunner:
    """Queue, start, watch and cancel background jobs.

    Parameters
    ----------
    catalogue
        a ``store.Catalogue`` (default: the one in the cache folder).
    jobs_root
        folder for default run folders and the queue lock (default ``<cache>/jobs``).
    max_concurrent
        jobs allowed to run at once (default ``$CLIPCLEANER_MAX_JOBS`` or 1).
    grace
        seconds between SIGTERM and SIGKILL when cancelling.
    """

    def __init__(self, catalogue=None, jobs_root=None, *, max_concurrent: int | None = None,
                 grace: float = GRACE_S):
        if catalogue is None:
            from clipcleaner_core.store import Catalogue

            catalogue = Catalogue()
        self.catalogue = catalogue
        self.jobs_root = Path(jobs_root) if jobs_root is not None else cache_dir() / "jobs"
        self.jobs_root.mkdir(parents=True, exist_ok=True)
        if max_concurrent is None:
            max_concurrent = int(os.environ.get(MAX_JOBS_ENV, "1"))
        if max_concurrent < 1:
            raise ConfigError(f"max_concurrent={max_concurrent}: at least one job must be allowed to run")
        self.max_concurrent = max_concurrent
        self.grace = float(grace)
        self._lock = FileLock(str(self.jobs_root / "queue.lock"))

    # ---- public API ------------------------------------------------------------------------
    def submit(self, argv, *, kind: str = "train", run_dir=None, name: str | None = None) -> int:
        """Queue ``argv`` (a list of strings) and start it if a slot is free; returns the job id."""
        argv = [str(a) for a in argv]
        if not argv:
            raise CLIPCleanerError("cannot submit an empty command line; pass the program and its arguments")
        run_dir = Path(run_dir if run_dir is not None else self.new_run_dir(kind)).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            job_id = int(self.catalogue.add_job(kind, argv, str(run_dir)))
            self.catalogue.update_job(job_id, status="queued", name=name, created=time.time())
        log.info("job %d queued: %s", job_id, " ".join(argv))
        self.pump()
        return job_id

    def new_run_dir(self, kind: str = "train") -> Path:
        """A fresh, unique folder under ``<jobs_root>/runs`` for a job's outputs (not yet created)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.jobs_root / "runs" / f"{stamp}-{kind}-{secrets.token_hex(3)}"

    def status(self, job_id: int) -> JobInfo:
        row = self.catalogue.get_job(int(job_id))
        if row is None:
            raise CLIPCleanerError(f"no job with id {job_id}; list the jobs with JobRunner().list()")
        return _job_info(row)

    def list(self) -> list[JobInfo]:
        """All jobs, newest first."""
        return self._jobs()[::-1]

    def tail(self, job_id: int, lines: int = 50) -> str:
        """The last ``lines`` lines of the job's log ("" before it has written anything)."""
        return tail_file(self.status(job_id).log_path, lines)

    def pump(self) -> list[int]:
        """Start queued jobs (oldest first) while fewer than ``max_concurrent`` run; returns their ids."""
        started = []
        with self._lock:
            jobs = self._jobs()
            free = self.max_concurrent - sum(j.status in ACTIVE for j in jobs)
            for job in [j for j in jobs if j.status == "queued"][:max(free, 0)]:
                self._start(job)
                started.append(job.id)
        return started

    def cancel(self, job_id: int, *, wait: bool = True, timeout: float = 30.0) -> JobInfo:
        """Stop a job: a queued one never starts; a running one gets SIGTERM, then SIGKILL.

        With ``wait`` this returns once no process of the job's group remains.
        """
        with self._lock:
            job = self.status(job_id)
            if job.status == "queued":
                self.catalogue.update_job(job.id, status="cancelled", ended=time.time())
                return self.status(job.id)
            if job.status not in ACTIVE or job.pid is None:
                return job
            self.catalogue.update_job(job.id, status="cancelling")
        signal_group(job.pid, signal.SIGTERM)
        if wait:
            if not wait_group_gone(job.pid, self.grace):
                signal_group(job.pid, signal.SIGKILL)
                wait_group_gone(job.pid, timeout)
            self._finish_cancel(job.id)
        return self.status(job.id)

    def reconcile(self, *, stale_after: float = STALE_AFTER_S) -> list[int]:
        """Mark failed the jobs marked active whose supervisor is gone; returns their ids."""
        failed = []
        with self._lock:
            for job in self._jobs():
                if job.status not in ACTIVE:
                    continue
                reason = _vanished_reason(job, stale_after)
                if reason is None:
                    continue
                if job.pid is not None:
                    signal_group(job.pid, signal.SIGKILL)  # leftovers of a dead supervisor
                if self._record_from_heartbeat(job):
                    continue
                status = "cancelled" if job.status == "cancelling" else "failed"
                self.catalogue.update_job(job.id, status=status, ended=time.time(), error=reason)
                _append_log(job.log_path, f"[jobs] marked {status} at start-up: {reason}")
                failed.append(job.id)
        if failed:
            self.pump()
        return failed

    # ---- internals ---------------------------------------------------------------------------
    def _record_from_heartbeat(self, job: JobInfo) -> bool:
        """Record the outcome a supervisor wrote to job.json before it died, if it got that far.

        The supervisor writes the outcome to job.json first and to the catalogue second, so a
        kill (or a catalogue that could not be written) between the two loses nothing.
        """
        final = _read_json(job.run_dir / HEARTBEAT_NAME)
        if final.get("job_id") != job.id or final.get("status") not in FINISHED:
            return False
        self.catalogue.update_job(job.id, status=final["status"], exit_code=final.get("exit_code"),
                                  ended=final.get("ended") or final.get("heartbeat"), error=final.get("error"))
        _append_log(job.log_path, f"[jobs] recorded {final['status']} from {HEARTBEAT_NAME} at start-up "
                                  "(the supervisor ended before it could)")
        return True

    def _jobs(self) -> list[JobInfo]:
        """All jobs, oldest first."""
        return [_job_info(row) for row in self.catalogue.list_jobs()]

    def _start(self, job: JobInfo) -> None:
        import subprocess

        cmd = [sys.executable, "-m", "clipcleaner_core.jobs", "--jobs-root", str(self.jobs_root),
               "--db", str(self.catalogue.db_path), "supervise", str(job.id),
               "--max-concurrent", str(self.max_concurrent), "--grace", str(self.grace)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(job.log_path, "ab") as log_file:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                    env=env, start_new_session=True)
        # Reap the supervisor when it ends, so it never lingers as a zombie of the app.
        threading.Thread(target=proc.wait, name=f"reap-job-{job.id}", daemon=True).start()
        self.catalogue.update_job(job.id, status="starting", pid=proc.pid, started=time.time())
        log.info("job %d starting (supervisor pid %d)", job.id, proc.pid)

    def _finish_cancel(self, job_id: int) -> None:
        with self._lock:
            job = self.status(job_id)
            if job.status not in FINISHED:  # the supervisor was killed before it could record it
                self.catalogue.update_job(job_id, status="cancelled", ended=time.time())
                _append_log(job.log_path, "[jobs] cancelled (the supervisor was stopped with SIGKILL)")
        self.pump()


# ---- helpers -------------------------------------------------------------------------------
def _job_info(row: dict) -> JobInfo:
    run_dir = Path(row["run_dir"])
    return JobInfo(
        id=row["id"], kind=row["kind"], name=row["name"], status=row["status"], argv=tuple(row["argv"]),
        run_dir=run_dir, pid=row["pid"], exit_code=row["exit_code"], created=row["created"],
        started=row["started"], ended=row["ended"],
        heartbeat=_read_json(run_dir / HEARTBEAT_NAME).get("heartbeat"), error=row["error"],
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _append_log(path: Path, line: str) -> None:
    with contextlib.suppress(OSError):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def _vanished_reason(job: JobInfo, stale_after: float) -> str | None:
    if job.pid is None or not pid_alive(job.pid):
        return "its supervisor process is gone (killed, or the machine restarted)"
    last = job.heartbeat or job.started
    if last is not None and time.time() - last > stale_after:
        return f"no heartbeat for {time.time() - last:.0f} s (the supervisor hung or its pid was reused)"
    return None


# ---- the supervisor --------------------------------------------------------------------------
def supervise(job_id: int, runner: JobRunner) -> int:
    """Run job ``job_id``'s command in this process group; record heartbeat, status and exit code."""
    import subprocess

    set_subreaper()  # orphaned grandchildren become ours, so we can reap them
    job = runner.status(job_id)
    if job.status not in ("queued", "starting"):
        log.warning("job %d is %s; not starting it", job_id, job.status)
        return 0
    stop = {"at": None}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(at=stop["at"] or time.monotonic()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner.catalogue.update_job(job_id, status="running", pid=os.getpid(), started=time.time())
    print(f"[jobs] job {job_id} started: {' '.join(job.argv)}", flush=True)
    try:
        child = subprocess.Popen(list(job.argv), stdin=subprocess.DEVNULL)
    except OSError as exc:
        print(f"[jobs] could not start the command: {exc}", flush=True)
        return _record_end(runner, job, 127, cancelled=False, error=str(exc))
    code = _watch(child, job, runner.grace, stop)
    current = runner.status(job_id).status
    return _record_end(runner, job, code, cancelled=stop["at"] is not None or current == "cancelling")


def _watch(child, job: JobInfo, grace: float, stop: dict) -> int:
    """Heartbeat until the child exits; reap orphans; escalate to SIGKILL after a cancel's grace."""
    code = None
    next_beat = 0.0
    while True:
        for pid, status in reap_children():
            if pid == child.pid:
                code = os.waitstatus_to_exitcode(status)
                child.returncode = code
        if code is not None and not group_alive(os.getpgrp(), exclude=os.getpid()):
            return code
        if stop["at"] is not None and time.monotonic() - stop["at"] > grace:
            kill_group_members(os.getpgrp(), exclude=os.getpid())
        if time.monotonic() >= next_beat:
            _beat(job, "running")
            next_beat = time.monotonic() + HEARTBEAT_S
        if code is not None and stop["at"] is None:
            # the command ended but left processes behind: give them the grace period, then stop them
            stop["at"] = time.monotonic()
        time.sleep(0.05)


def _beat(job: JobInfo, status: str, **extra) -> None:
    with contextlib.suppress(OSError):
        write_json(job.run_dir / HEARTBEAT_NAME,
                   {"job_id": job.id, "status": status, "pid": os.getpid(), "heartbeat": time.time(), **extra})


def _record_end(runner: JobRunner, job: JobInfo, code: int, *, cancelled: bool, error: str | None = None) -> int:
    status = "cancelled" if cancelled else ("done" if code == 0 else "failed")
    if status == "failed" and error is None:
        error = f"the command exited with code {code}; see the log"
    ended = time.time()
    _beat(job, status, exit_code=code, ended=ended, error=error)  # first: reconcile() reads it
    print(f"[jobs] job {job.id} {status} (exit code {code})", flush=True)
    try:
        runner.catalogue.update_job(job.id, status=status, exit_code=code, ended=ended, error=error)
        runner.pump()
    except CLIPCleanerError as exc:  # e.g. the disk is full: job.json keeps the outcome
        print(f"[jobs] could not record the outcome in the catalogue: {exc}", flush=True)
        return 1
    return 0


def main(argv=None) -> int:
    """``python -m clipcleaner_core.jobs list|tail|cancel|reconcile|supervise``."""
    parser = argparse.ArgumentParser(prog="python -m clipcleaner_core.jobs")
    parser.add_argument("--db", default=None, help="catalogue file (default: the cache's)")
    parser.add_argument("--jobs-root", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every job with its status")
    sub.add_parser("reconcile", help="mark failed the jobs whose process vanished")
    for name, text in (("tail", "the end of a job's log"), ("cancel", "stop a job and its processes")):
        sub.add_parser(name, help=text).add_argument("job_id", type=int)
    sup = sub.add_parser("supervise", help="run one queued job (started by the job runner)")
    sup.add_argument("job_id", type=int)
    sup.add_argument("--max-concurrent", type=int, default=None)
    sup.add_argument("--grace", type=float, default=GRACE_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[jobs] %(message)s")
    from clipcleaner_core.store import Catalogue

    runner = JobRunner(Catalogue(args.db), args.jobs_root, max_concurrent=getattr(args, "max_concurrent", None),
                       grace=getattr(args, "grace", GRACE_S))
    if args.command == "supervise":
        return supervise(args.job_id, runner)
    if args.command == "list":
        for job in runner.list():
            print(f"{job.id}\t{job.status}\t{job.kind}\t{job.name or ''}\t{job.run_dir}")
    elif args.command == "reconcile":
        print(" ".join(map(str, runner.reconcile())))
    elif args.command == "tail":
        print(runner.tail(args.job_id))
    elif args.command == "cancel":
        print(runner.cancel(args.job_id).status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
