"""train(): the run folder, MixFix against the baselines, resume, cancellation."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clipcleaner_core.errors import Cancelled, CLIPCleanerError
from clipcleaner_core.train import RunDir, TrainConfig, train
from clipcleaner_core.train.rundir import METRIC_KEYS

from train_helpers import blobs

RUN_FILES = {"config.json", "metrics.jsonl", "best.safetensors", "last.safetensors",
             "last_state.pt", "train.log", "status.json"}


def _train(tmp_path, name="run", **changes):
    dataset, features, table = blobs()
    config = TrainConfig(**{"data": "blobs", "epochs": 4, **changes})
    return train(config, run_dir=tmp_path / name, dataset=dataset, features=features, selection=table)


def test_run_folder_holds_every_file_of_the_contract(tmp_path):
    result = _train(tmp_path)
    folder = tmp_path / "run"
    assert RUN_FILES <= {p.name for p in folder.iterdir()}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == status["epochs"] == 4
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert set(METRIC_KEYS) <= set(rows[0])
    config = json.loads((folder / "config.json").read_text())
    assert config["lr"] == 0.1 and config["milestones"] == [3, 3] and config["test_labels"] == "true"
    assert TrainConfig.from_dict(config) == result.config  # config.json reproduces the run
    state = torch.load(folder / "last_state.pt", weights_only=True)
    assert state["epoch"] == 4
    assert result.best_test_acc == max(r["test_acc"] for r in rows)


def test_mixfix_grows_a_clean_set_and_beats_training_on_all_given_labels(tmp_path):
    mixfix = _train(tmp_path, "mixfix", epochs=8)
    baseline = _train(tmp_path, "all", epochs=8, mode="all")
    clean = _train(tmp_path, "clean", epochs=8, mode="clean")
    s0 = clean.metrics[-1]["train_set_size"]
    assert mixfix.metrics[-1]["train_set_size"] > s0  # the set grew beyond S0
    assert mixfix.metrics[-1]["relabel_count"] > 0
    assert mixfix.metrics[-1]["label_precision"] > 0.95  # relabels are mostly right
    assert baseline.metrics[-1]["label_precision"] < 0.7  # 40% noise
    assert mixfix.final_test_acc > baseline.final_test_acc


def test_stopped_run_resumes_to_the_same_result_as_a_straight_run(tmp_path):
    straight = _train(tmp_path, "straight")
    dataset, features, table = blobs()
    config = TrainConfig(data="blobs", epochs=4)
    seen = []

    def stop_after_two_epochs():
        return ("epoch", 2, 4) in seen

    def progress(stage, done, total, rate):
        seen.append((stage, done, total))

    with pytest.raises(Cancelled, match="after epoch 2 of 4; run the same command again"):
        train(config, run_dir=tmp_path / "resumed", dataset=dataset, features=features,
              selection=table, progress=progress, cancel=stop_after_two_epochs)
    assert RunDir(tmp_path / "resumed").read_status()["state"] == "cancelled"
    assert RunDir(tmp_path / "resumed").read_status()["epoch"] == 2
    assert [done for stage, done, total in seen if stage == "epoch"] == [1, 2]
    steps = [(done, total) for stage, done, total in seen if stage == "train"]
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)  # done never decreases
    assert steps[-1][0] * 2 == steps[-1][1]  # stopped after two of four epochs: half the steps
    resumed = train(config, run_dir=tmp_path / "resumed", dataset=dataset, features=features,
                    selection=table)
    assert resumed.resumed_from_epoch == 2 and resumed.state == "finished"
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3, 4]
    for a, b in zip(straight.metrics, resumed.metrics):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["test_acc"] == b["test_acc"] and a["train_set_size"] == b["train_set_size"]
    w1 = load_file(str(tmp_path / "straight" / "last.safetensors"))
    w2 = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


def test_a_folder_holding_another_config_is_refused(tmp_path):
    _train(tmp_path, "run", epochs=1)
    with pytest.raises(CLIPCleanerError, match="theta_r2"):
        _train(tmp_path, "run", epochs=1, theta_r2=0.5)


def test_a_finished_run_with_the_same_config_is_not_trained_again(tmp_path):
    first = _train(tmp_path, "run", epochs=2)
    again = _train(tmp_path, "run", epochs=2)
    assert again.resumed_from_epoch == 2 and again.metrics == first.metrics


def test_test_accuracy_without_truth_is_marked_noisy(tmp_path):
    dataset, features, table = blobs()
    dataset = dataset.replace(true_labels=None)
    result = train(TrainConfig(data="blobs", epochs=1), run_dir=tmp_path / "r", dataset=dataset,
                   features=features, selection=table)
    assert result.test_labels == "given (noisy)"
    assert result.metrics[0]["label_precision"] is None
    assert json.loads((tmp_path / "r" / "config.json").read_text())["test_labels"] == "given (noisy)"


def test_reviewer_drops_are_left_out_and_relabels_used(tmp_path):
    from clipcleaner_core.data import holdout_split
    from clipcleaner_core.train.data import load_train_data

    dataset, features, table = blobs(n=200)
    train_rows, _ = holdout_split(200, fraction=0.2, seed=0)
    dropped, fixed = sorted(train_rows)[:2]
    new_label = (dataset.labels[fixed] + 1) % 4
    table["review_decision"] = ""
    table.loc[dropped, "review_decision"] = "drop"
    table.loc[fixed, ["is_clean", "final_label"]] = [True, new_label]
    data = load_train_data(TrainConfig(data="blobs"), dataset=dataset, features=features,
                           selection=table)
    assert dropped not in data.index and len(data.index) == len(train_rows) - 1
    assert len(data.test_labels) == 200 - len(train_rows)
    row = int(np.flatnonzero(data.index == fixed)[0])
    assert data.s0_mask[row] and data.s0_labels[row] == new_label


def test_a_run_that_cannot_start_says_failed_in_its_status(tmp_path):
    from clipcleaner_core.errors import DataError

    dataset, features, table = blobs(n=100)
    with pytest.raises(DataError, match="is_clean"):
        train(TrainConfig(data="blobs", epochs=1), run_dir=tmp_path / "r", dataset=dataset,
              features=features, selection=table.drop(columns="is_clean"))
    status = RunDir(tmp_path / "r").read_status()
    assert status["state"] == "failed" and "is_clean" in status["message"]


def test_a_cancel_while_the_run_embeds_and_selects_stops_it_there(tmp_path):
    """Cancel reaches the embedding and the default selection a run does before its first epoch."""
    with pytest.raises(Cancelled):
        train(TrainConfig(data="demo", epochs=1), run_dir=tmp_path / "r", cache_root=tmp_path / "c",
              cancel=lambda: True)
    status = RunDir(tmp_path / "r").read_status()
    assert status["state"] == "cancelled" and status["epoch"] == 0
    assert not list((tmp_path / "c").glob("fits/*.npz"))  # nothing half-fitted was kept
