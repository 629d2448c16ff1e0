"""The trainer across two "nodes": two torchrun launchers meeting through a multi-node rendezvous
(``--nnodes 2 --node-rank 0/1 --master-addr 127.0.0.1``), one CPU process each (gloo). The run is the
same as the one-node DDP run: one run folder written by rank 0, metrics all-reduced over both."""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_ddp import SCRIPT

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two torchrun "nodes" training (~15 s)
def test_two_nodes_train_one_run_through_a_multi_node_rendezvous(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1"}
    port = _free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
         "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}", str(script),
         str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for rank in (0, 1)]
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=180)[0])
        except subprocess.TimeoutExpired:
            for other in nodes:
                os.killpg(other.pid, signal.SIGKILL)
            pytest.fail("the two-node rendezvous timed out")
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == "2"
    for row0, row1 in zip(ranks[0]["metrics"], ranks[1]["metrics"]):
        row0.pop("time"), row1.pop("time")
        assert row0 == row1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["run"]["world_size"] == 2
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"
