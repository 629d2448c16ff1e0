"""Training configs: presets fill the schedule, JSON round trips with types checked, bad values named."""
import json

import pytest

from clipcleaner_core.errors import ConfigError
from clipcleaner_core.presets import TRAIN_PRESETS as PAPER_TRAIN_PRESETS
from clipcleaner_core.train.config import TrainConfig, resolve_config, resume_key


def test_paper_preset_fills_every_unset_schedule_field():
    paper = PAPER_TRAIN_PRESETS["webvision"]
    config = resolve_config(TrainConfig(backbone="preact_resnet18", preset="webvision"))
    assert config.epochs == paper["epochs"] and config.batch_size == paper["batch"]
    assert config.milestones == tuple(paper["milestones"])
    assert (config.beta, config.theta_r, config.theta_r2) == (paper["beta"], paper["theta_r"], paper["theta_r2"])
    assert config.image_size == 32


def test_explicit_values_win_and_milestones_follow_a_shorter_schedule():
    config = resolve_config(TrainConfig(backbone="preact_resnet18", preset="cifar10-sym", epochs=30, lr=0.1))
    assert config.preset == "cifar10" and config.epochs == 30 and config.lr == 0.1
    assert config.milestones == (20, 25)  # 2/3 and 5/6 of the run, not the 300-epoch preset's


def test_json_round_trip_keeps_types():
    config = resolve_config(TrainConfig(backbone="preact_resnet18", epochs=6))
    again = TrainConfig.from_json(config.to_json())
    assert again == config and isinstance(again.milestones, tuple)
    loose = json.loads(config.to_json())
    loose["epochs"] = 6.0  # a whole float from a hand-edited file is still an int
    assert TrainConfig.from_dict(loose).epochs == 6


@pytest.mark.parametrize("changes, match", [
    ({"epochs": "ten"}, "epochs='ten' must be int"),
    ({"colour": "red"}, "unknown training config keys"),
    ({"milestones": [1, "x"]}, "milestones entry"),
])
def test_bad_config_files_name_the_key_and_value(changes, match):
    values = {**json.loads(TrainConfig().to_json()), **changes}
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize("changes, match", [
    ({"backbone": "vgg"}, "unknown backbone"),
    ({"theta_r": 1.5}, "theta_r must be a confidence"),
    ({"holdout": 1.0}, "holdout must be a fraction"),
    ({"preset": "imagenet"}, "unknown preset"),
])
def test_invalid_values_are_refused_with_the_valid_choices(changes, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config(TrainConfig(**changes))


def test_resume_key_ignores_fields_that_may_change_between_runs():
    config = resolve_config(TrainConfig(backbone="linear", epochs=4))
    assert resume_key(config) == resume_key(config.replace(resume=True))
    assert resume_key(config) != resume_key(config.replace(lr=config.lr * 2))


def test_the_preset_input_size_goes_with_its_backbone():
    assert resolve_config(TrainConfig(backbone="preact_resnet18", preset="animal10n")).image_size == 64
    assert resolve_config(TrainConfig(backbone="resnet50", preset="animal10n")).image_size == 224
    assert resolve_config(TrainConfig(backbone="resnet50", preset="webvision")).image_size == 299
