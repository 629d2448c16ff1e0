"""One error hierarchy: every config or data error is a CLIPCleanerError (and a ValueError), and the
command line prints any of them as one line with exit status 2, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

from clipcleaner_core.encoders import EncoderSpec, resolve_device
from clipcleaner_core.errors import CLIPCleanerError, ConfigError, DataError, DatasetMismatchError
from clipcleaner_core.export import export
from clipcleaner_core.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def test_config_and_data_errors_are_both_library_errors_and_value_errors():
    for cls in (ConfigError, DataError, DatasetMismatchError):
        assert issubclass(cls, CLIPCleanerError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("make_bad_config", [
    lambda: EncoderSpec(model="", pretrained=None),
    lambda: resolve_device("tpu:7"),
    lambda: TrainConfig.from_dict({"no_such_key": 1}),
    lambda: export(__import__("pandas").DataFrame(), "xlsx", "out.xlsx"),
])
def test_core_config_checks_raise_config_error(make_bad_config):
    with pytest.raises(ConfigError):
        make_bad_config()


@pytest.mark.parametrize("argv, needle", [
    (["run", "--data", "demo", "--theta-gmm", "-0.5", "--out", "x.csv"], "--theta-gmm"),
    (["train", "--data", "demo", "--epochs", "0"], "epochs"),
    (["embed", "--data", "demo", "--noise", "bogus:0.3"], "bogus"),
    (["run", "--data", "demo", "--temperature", "inf", "--out", "x.csv"], "--temperature inf"),
])
def test_cli_prints_config_errors_as_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    from clipcleaner_core.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_the_real_command_prints_one_line_too(tmp_path):
    """``python -m clipcleaner_core`` itself (one process start; the cases above call ``main``)."""
    proc = subprocess.run([sys.executable, "-m", "clipcleaner_core", "run", "--data", "demo",
                           "--temperature", "inf", "--out", "x.csv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error:") and "--temperature inf" in proc.stderr


@pytest.mark.parametrize("values, needle", [
    ({"epochs": "ten"}, "epochs='ten' must be int"),
    ({"milestones": [10, "x"]}, "milestones entry='x'"),
    ({"amp": "yes"}, "amp='yes' must be bool"),
    ({"lr": [0.1]}, "lr=[0.1] must be float"),
])
def test_training_config_values_of_the_wrong_type_are_config_errors(values, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig.from_dict(values)


def test_training_config_round_trips_through_json():
    config = TrainConfig(epochs=3, milestones=(1, 2), lr=0.1, amp=False)
    assert TrainConfig.from_json(config.to_json()) == config


def test_train_config_file_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from clipcleaner_core.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{bad")
    for config, needle in ((tmp_path / "bad.json", "not valid JSON"), (tmp_path / "nope.json", "does not exist")):
        assert main(["train", "--data", "demo", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("changes, needle", [
    ({"lr": float("nan")}, "lr must be a number > 0"), ({"lr": 0.0}, "lr must be"),
    ({"beta": float("inf")}, "beta must be"), ({"momentum": -0.1}, "momentum must be"),
    ({"theta_r": float("nan")}, "theta_r must be"), ({"hidden": 0}, "hidden must be >= 1"),
])
def test_training_numbers_that_would_train_garbage_are_refused(changes, needle):
    from clipcleaner_core.train.config import resolve_config

    with pytest.raises(ConfigError, match=needle):
        resolve_config(TrainConfig(**changes))
