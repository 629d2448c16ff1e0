"""train(): a kill -9 at any instant of the end-of-epoch writes, or a full disk, leaves a
resumable run; an unreadable resume point is named with the way out.

Each case runs training in a child process that stops at one write (before or after a file is
moved into place), kills it with SIGKILL, resumes in this process and checks that every finished
epoch was kept and the run ends exactly like an uninterrupted one.
"""
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from clipcleaner_core.train import RunDir, TrainConfig, train
from clipcleaner_core.train.rundir import BEST, LAST

from fault_helpers import run_paused
from train_helpers import blobs

EPOCHS = 3
_CHILD = textwrap.dedent(f"""
    import sys
    from clipcleaner_core.train import TrainConfig, train
    from train_helpers import blobs
    dataset, features, table = blobs()
    train(TrainConfig(data="blobs", epochs={EPOCHS}), run_dir=sys.argv[1], dataset=dataset,
          features=features, selection=table)
""")


def _train(run_dir):
    dataset, features, table = blobs()
    return train(TrainConfig(data="blobs", epochs=EPOCHS), run_dir=run_dir, dataset=dataset,
                 features=features, selection=table)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    return _train(folder), load_file(str(folder / LAST))


@pytest.mark.parametrize("pause_at, kept_epochs", [
    ("before:last_state.pt:2", 1),       # epoch 2's state fully written, not yet in place
    ("after:last_state.pt:2", 2),        # state of epoch 2 in place; weights and metrics of epoch 1
    ("after:last.safetensors:2", 2),     # weights of epoch 2 too; metrics of epoch 1
    ("after:last_state.pt:3", 3),        # the last epoch's state, nothing derived from it yet
    ("after:best.safetensors:1", 1),     # first epoch: best written, last.safetensors not yet
])
def test_kill_9_at_any_write_keeps_every_finished_epoch(tmp_path, straight, pause_at, kept_epochs):
    expected, expected_weights = straight
    run_dir = tmp_path / "run"
    run_paused(_CHILD, pause_at, tmp_path, str(run_dir))

    resumed = _train(run_dir)

    assert resumed.state == "finished" and resumed.resumed_from_epoch == kept_epochs
    assert [m["epoch"] for m in resumed.metrics] == list(range(1, EPOCHS + 1))
    for a, b in zip(expected.metrics, resumed.metrics):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["test_acc"] == b["test_acc"] and a["train_set_size"] == b["train_set_size"]
    run = RunDir(run_dir)
    assert [m["epoch"] for m in run.read_metrics()] == list(range(1, EPOCHS + 1))
    weights = load_file(str(run_dir / LAST))
    assert all(torch.allclose(weights[k], expected_weights[k], atol=1e-5) for k in weights)
    accs = [m["test_acc"] for m in resumed.metrics]
    assert run.weights_epoch(LAST) == EPOCHS and run.weights_epoch(BEST) == accs.index(max(accs)) + 1
    assert run.read_status()["state"] == "finished"
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_during_training_stops_with_one_message_and_resumes(tmp_path, monkeypatch):
    import shutil

    from clipcleaner_core import storage

    real_usage, full = shutil.disk_usage, []

    def usage(path):
        total, used, free = real_usage(path)
        return shutil._ntuple_diskusage(total, used, 0 if full else free)

    def progress(stage, done, total, rate):
        if stage == "epoch" and done == 1:
            full.append(True)  # the disk fills up during epoch 2

    monkeypatch.setattr(storage.shutil, "disk_usage", usage)
    dataset, features, table = blobs()
    config = TrainConfig(data="blobs", epochs=EPOCHS)
    with pytest.raises(storage.StorageError, match=rf"^not enough disk space in {tmp_path / 'run'} to write "
                                                  r"last_state\.pt \(needs [\d.]+ KiB, 0 B free\)"):
        train(config, run_dir=tmp_path / "run", dataset=dataset, features=features, selection=table,
              progress=progress)
    full.clear()
    resumed = _train(tmp_path / "run")
    assert resumed.resumed_from_epoch == 1 and resumed.state == "finished"
    assert [m["epoch"] for m in resumed.metrics] == list(range(1, EPOCHS + 1))


def test_an_unreadable_resume_state_is_named_with_the_way_out(tmp_path):
    from clipcleaner_core.errors import CLIPCleanerError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CLIPCleanerError, match=rf"cannot read the resume point {run_dir / 'last_state.pt'}: "
                                               rf"it is damaged .*delete the folder {run_dir} to start the run over"):
        _train(run_dir)
