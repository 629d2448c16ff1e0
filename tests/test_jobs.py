"""Background jobs: cancel leaves nothing behind, dead jobs are found at start-up, the queue waits."""
import os
import signal
import sys
import textwrap
import time

import pytest

from clipcleaner_core.jobs import JobRunner
from clipcleaner_core.store import Catalogue

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX-only")

SPAWNS_AND_SLEEPS = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\\n"
                              "if len(sys.argv) > 1: signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
                              "time.sleep(600)"] + (["x"] if "--ignore-term" in sys.argv else []))
    with open(sys.argv[1] + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()} {child.pid}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    print("job started", flush=True)
    time.sleep(600)
""")

SHORT = textwrap.dedent("""
    import sys, time
    print("working", flush=True)
    time.sleep(float(sys.argv[1]))
    sys.exit(int(sys.argv[2]))
""")


def wait_until(predicate, timeout=20.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise AssertionError("condition not reached within the timeout")


def group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def runner(tmp_path):
    return JobRunner(Catalogue(tmp_path / "catalogue.sqlite"), tmp_path / "jobs", grace=2.0)


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "spawn.py").write_text(SPAWNS_AND_SLEEPS)
    (tmp_path / "short.py").write_text(SHORT)
    return tmp_path


def launch_sleeper(runner, scripts, *extra):
    pids_file = scripts / f"pids-{time.monotonic_ns()}"
    job_id = runner.submit([sys.executable, scripts / "spawn.py", pids_file, *extra], kind="test")
    wait_until(pids_file.exists)
    job_pid, child_pid = map(int, pids_file.read_text().split())
    return job_id, job_pid, child_pid


def test_cancel_stops_the_whole_process_group(runner, scripts):
    job_id, job_pid, child_pid = launch_sleeper(runner, scripts)
    job = runner.status(job_id)
    assert job.status == "running"
    pgid = job.pid
    assert os.getpgid(job_pid) == pgid and os.getpgid(child_pid) == pgid
    assert os.getsid(pgid) != os.getsid(0), "the job must live in its own session, apart from the app"

    job = runner.cancel(job_id)

    assert job.status == "cancelled"
    assert group_gone(pgid), "a process of the cancelled job's group is still there"
    assert "job started" in runner.tail(job_id)


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path, scripts):
    runner = JobRunner(Catalogue(tmp_path / "catalogue.sqlite"), tmp_path / "jobs", grace=1.0)
    job_id, _, _ = launch_sleeper(runner, scripts, "--ignore-term")
    pgid = runner.status(job_id).pid
    started = time.monotonic()

    job = runner.cancel(job_id)

    assert time.monotonic() - started >= 1.0
    assert job.status == "cancelled"
    assert group_gone(pgid)


def test_job_killed_with_sigkill_is_marked_failed_at_next_start(runner, scripts, tmp_path):
    job_id, _, _ = launch_sleeper(runner, scripts)
    pgid = runner.status(job_id).pid
    os.killpg(pgid, signal.SIGKILL)  # supervisor and command die without recording anything
    wait_until(lambda: group_gone(pgid))
    assert runner.status(job_id).status == "running"

    restarted = JobRunner(Catalogue(tmp_path / "catalogue.sqlite"), tmp_path / "jobs")
    assert restarted.reconcile() == [job_id]

    job = restarted.status(job_id)
    assert job.status == "failed"
    assert "gone" in job.error
    assert "job started" in restarted.tail(job_id), "the log of a failed job is kept"


def test_stale_heartbeat_marks_a_job_failed(runner, scripts):
    job_id, _, _ = launch_sleeper(runner, scripts)
    assert runner.reconcile(stale_after=60) == []
    wait_until(lambda: runner.reconcile(stale_after=0.0) == [job_id])  # once its heartbeat is in the past
    assert runner.status(job_id).status == "failed"


def test_second_job_waits_until_the_first_ends(runner, scripts):
    first = runner.submit([sys.executable, scripts / "short.py", "1.0", "0"], kind="test")
    second = runner.submit([sys.executable, scripts / "short.py", "0.1", "3"], kind="test")
    assert runner.status(first).status in ("starting", "running")
    assert runner.status(second).status == "queued"

    wait_until(lambda: runner.status(second).finished, timeout=30)

    one, two = runner.status(first), runner.status(second)
    assert one.status == "done" and one.exit_code == 0
    assert two.status == "failed" and two.exit_code == 3, "a non-zero exit is recorded as failed"
    assert two.started >= one.ended, "the queued job started before the first one ended"
    assert "working" in runner.tail(second)
    assert [j.id for j in runner.list()] == [second, first]


def test_max_concurrent_lets_two_jobs_run_together(tmp_path, scripts):
    runner = JobRunner(Catalogue(tmp_path / "catalogue.sqlite"), tmp_path / "jobs", max_concurrent=2)
    ids = [runner.submit([sys.executable, scripts / "short.py", "1.0", "0"], kind="test") for _ in range(3)]
    assert [runner.status(i).status for i in ids] == ["starting", "starting", "queued"]
    wait_until(lambda: all(runner.status(i).finished for i in ids), timeout=30)
    assert all(runner.status(i).status == "done" for i in ids)


def test_cancelling_a_queued_job_means_it_never_starts(runner, scripts):
    first, _, _ = launch_sleeper(runner, scripts)
    queued = runner.submit([sys.executable, scripts / "short.py", "0", "0"], kind="test")
    assert runner.cancel(queued).status == "cancelled"
    runner.cancel(first)
    time.sleep(0.3)
    job = runner.status(queued)
    assert job.status == "cancelled" and job.started is None


def test_a_job_outlives_the_process_that_launched_it(tmp_path, scripts):
    launcher = textwrap.dedent(f"""
        import sys
        from clipcleaner_core.jobs import JobRunner
        from clipcleaner_core.store import Catalogue
        runner = JobRunner(Catalogue({str(tmp_path / "catalogue.sqlite")!r}), {str(tmp_path / "jobs")!r})
        print(runner.submit([sys.executable, {str(scripts / "short.py")!r}, "1.0", "0"], kind="test"))
    """)
    import subprocess

    out = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    job_id = int(out.stdout.split()[-1])  # the launching "app" has exited by now
    runner = JobRunner(Catalogue(tmp_path / "catalogue.sqlite"), tmp_path / "jobs")
    wait_until(lambda: runner.status(job_id).finished, timeout=30)
    job = runner.status(job_id)
    assert job.status == "done" and job.exit_code == 0
    assert job.heartbeat is not None and job.heartbeat >= job.started


def test_jobs_command_line_lists_and_tails(runner, scripts, tmp_path, capsys):
    from clipcleaner_core.jobs import main

    job_id = runner.submit([sys.executable, scripts / "short.py", "0", "0"], kind="test", name="quick")
    wait_until(lambda: runner.status(job_id).finished)
    args = ["--db", str(tmp_path / "catalogue.sqlite"), "--jobs-root", str(tmp_path / "jobs")]
    assert main([*args, "list"]) == 0
    assert f"{job_id}\tdone\ttest\tquick" in capsys.readouterr().out
    assert main([*args, "tail", str(job_id)]) == 0
    assert "working" in capsys.readouterr().out


_SUPERVISOR_KILLED_BEFORE_RECORDING = textwrap.dedent("""
    import os, sys, time
    from clipcleaner_core import store
    real_update = store.Catalogue.update_job

    def update_job(self, job_id, **fields):
        if fields.get("status") in ("done", "failed", "cancelled"):  # the outcome is known here
            open(os.environ["PAUSE_MARKER"], "w").close()
            time.sleep(3600)
        return real_update(self, job_id, **fields)

    store.Catalogue.update_job = update_job
    from clipcleaner_core.jobs import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_supervisor_killed_before_recording_the_outcome_loses_nothing(runner, scripts, tmp_path):
    from fault_helpers import run_paused

    job_id = runner.catalogue.add_job("train", [sys.executable, str(scripts / "short.py"), "0", "3"],
                                      tmp_path / "run")
    (tmp_path / "run").mkdir()
    run_paused(_SUPERVISOR_KILLED_BEFORE_RECORDING, "after:never:1", tmp_path, "--db", str(runner.catalogue.db_path), "--jobs-root", str(runner.jobs_root),
               "supervise", str(job_id))
    assert runner.status(job_id).status == "running"  # the catalogue never heard of the end
    assert runner.reconcile() == []
    job = runner.status(job_id)
    assert (job.status, job.exit_code) == ("failed", 3)
    assert "recorded failed from job.json" in job.log_path.read_text()
