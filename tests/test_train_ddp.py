"""The same trainer under torchrun: 2 CPU processes (gloo), one run folder written by rank 0."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from clipcleaner_core.train import TrainConfig, train
    from train_helpers import blobs

    out = sys.argv[1]
    dataset, features, table = blobs()
    result = train(TrainConfig(data="blobs", epochs=2, device="cpu"), run_dir=out + "/run",
                   dataset=dataset, features=features, selection=table)
    rank = os.environ["RANK"]
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump({"world": os.environ["WORLD_SIZE"], "metrics": result.metrics}, handle)
""")


def _torchrun(tmp_path, nproc):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(script), str(tmp_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        output, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]


def test_two_cpu_processes_train_one_run_and_agree(tmp_path):
    _torchrun(tmp_path, 2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == "2" and ranks[1]["world"] == "2"
    assert len(ranks[0]["metrics"]) == len(ranks[1]["metrics"]) == 2  # one row per epoch on each rank
    for row0, row1 in zip(ranks[0]["metrics"], ranks[1]["metrics"]):  # all-reduced, so equal
        row0.pop("time"), row1.pop("time")
        assert row0 == row1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "finished"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["run"]["world_size"] == 2
    assert not list((tmp_path / "run").glob("*.tmp"))


STOP_SCRIPT = textwrap.dedent("""
    import sys
    from clipcleaner_core.errors import Cancelled
    from clipcleaner_core.train import TrainConfig, train
    from clipcleaner_core.train.cli import EXIT_CANCELLED, _StopFlag
    from train_helpers import blobs

    dataset, features, table = blobs(n=2000)
    stop = _StopFlag()
    stop.install()
    try:
        train(TrainConfig(data="blobs", epochs=100000, device="cpu"), run_dir=sys.argv[1],
              dataset=dataset, features=features, selection=table, cancel=stop)
    except Cancelled:
        sys.exit(EXIT_CANCELLED)
    sys.exit(0)
""")


def test_sigterm_stops_between_batches_and_marks_the_run_cancelled(tmp_path):
    import time

    script = tmp_path / "stop.py"
    script.write_text(STOP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, output[-2000:]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "cancelled" and status["epoch"] >= 1
    lines = metrics.read_text().splitlines()
    assert len(lines) == status["epoch"]  # every finished epoch is logged, nothing partial
