"""The train command and the demo end to end: the cleaned set beats all given labels."""
import json

import pytest

from clipcleaner_core.train import TrainConfig, train
from clipcleaner_core.train.cli import add_arguments, config_from_args, main


def _args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 7, "beta": 0.5, "backbone": "mlp", "test_labels": "true",
                               "run": {"ignored": True}}))
    config = config_from_args(_args(["--config", str(cfg), "--epochs", "3", "--no-mixfix"]))
    assert (config.epochs, config.beta, config.backbone, config.mode) == (3, 0.5, "mlp", "clean")
    assert config_from_args(_args(["--all-labels"])).mode == "all"
    assert config_from_args(_args([])) == TrainConfig()


def test_unknown_config_keys_are_named(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ValueError, match="epoch"):
        config_from_args(_args(["--config", str(cfg)]))


def test_bad_values_exit_2_with_one_line(tmp_path, capsys):
    assert main(["--data", "demo", "--theta-r", "1.5", "--out", str(tmp_path / "r")]) == 2
    assert "theta_r" in capsys.readouterr().err


@pytest.fixture(scope="module")
def demo():
    from clipcleaner_core.data import load_dataset

    return load_dataset("demo")


def test_demo_probe_on_the_clean_set_beats_the_probe_on_all_given_labels(demo, tmp_path):
    clean = train(TrainConfig(data="demo", mode="clean"), run_dir=tmp_path / "clean", dataset=demo)
    noisy = train(TrainConfig(data="demo", mode="all"), run_dir=tmp_path / "all", dataset=demo)
    assert clean.test_labels == "true"
    assert clean.final_test_acc > noisy.final_test_acc + 0.03
    assert clean.metrics[-1]["label_precision"] > noisy.metrics[-1]["label_precision"]


def test_cli_trains_the_demo_from_an_exported_score_table(demo, tmp_path, capsys):
    from clipcleaner_core.encoders import EncoderSpec
    from clipcleaner_core.pipeline import prepare, select_samples

    table = select_samples(prepare(demo, EncoderSpec(model="pixels"))).table
    table.to_csv(tmp_path / "scores.csv", index=False)
    out = tmp_path / "run"
    code = main(["--data", "demo", "--selection", str(tmp_path / "scores.csv"), "--epochs", "3",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "finished" and summary["epochs"] == 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["train_set_size"] >= int(table["is_clean"].sum() * 0.7)


def test_recipe_thresholds_are_read_from_an_exported_recipe(tmp_path):
    from clipcleaner_core.train.data import _selection_values

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"format": "clipcleaner-recipe", "settings": {
        "encoder": {"model": "pixels"}, "selection": {"theta_gmm": 0.3, "theta_cons": 0.9,
                                                      "use_zs_loss": False}}}))
    values = _selection_values(TrainConfig(selection=str(recipe), preset="webvision"))
    assert values["theta_gmm"] == 0.3 and values["theta_cons"] == 0.9 and not values["use_zs_loss"]
    assert _selection_values(TrainConfig(preset="webvision"))["theta_cons"] == 1.0


def test_a_runs_config_json_launches_the_same_run_and_flags_beside_it_override(demo, tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["--data", "demo", "--all-labels", "--epochs", "2", "--device", "cpu", "--out", str(first)]) == 0
    saved = json.loads((first / "config.json").read_text())
    assert saved["mode"] == "all" and "run" in saved  # the mode is kept in the config, once
    again = tmp_path / "again"
    assert main(["--config", str(first / "config.json"), "--out", str(again)]) == 0
    rerun = json.loads((again / "config.json").read_text())
    assert {k: v for k, v in rerun.items() if k != "run"} == {k: v for k, v in saved.items() if k != "run"}
    first_rows = (first / "metrics.jsonl").read_text().splitlines()
    again_rows = (again / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["test_acc"] for r in again_rows] == [json.loads(r)["test_acc"] for r in first_rows]
    longer = tmp_path / "longer"
    assert main(["--config", str(first / "config.json"), "--epochs", "3", "--out", str(longer)]) == 0
    assert json.loads((longer / "config.json").read_text())["epochs"] == 3
    assert len((longer / "metrics.jsonl").read_text().splitlines()) == 3
