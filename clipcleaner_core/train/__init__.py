"""Training on the cleaned set: the paper's MixFix recipe over a linear / MLP head or a CNN.

    from clipcleaner_core.train import TrainConfig, train
    result = train(TrainConfig(data="demo", backbone="linear"), run_dir="runs/demo")

The command line is ``python -m clipcleaner_core train`` (see :mod:`.cli`).
"""
from clipcleaner_core.train.config import BACKBONES, TRAIN_PRESETS, TrainConfig, resolve_config
from clipcleaner_core.train.data import TrainData, load_train_data, selection_from_table
from clipcleaner_core.train.mixfix import (
    GrowResult, balanced_batches, mixup, relabel_and_grow, soft_cross_entropy, step_lr,
)
from clipcleaner_core.train.models import PreActResNet18, build_model
from clipcleaner_core.train.rundir import RunDir
from clipcleaner_core.train.trainer import RunResult, train

__all__ = [
    "BACKBONES", "TRAIN_PRESETS", "TrainConfig", "resolve_config", "TrainData", "load_train_data",
    "selection_from_table", "GrowResult", "balanced_batches", "mixup", "relabel_and_grow",
    "soft_cross_entropy", "step_lr", "PreActResNet18", "build_model", "RunDir", "RunResult", "train",
]
