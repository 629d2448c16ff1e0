"""Training configuration: one frozen dataclass, resolved against the paper's presets.

``TrainConfig`` fields left as ``None`` are filled by :func:`resolve_config` from the dataset preset
(DESIGN §2, from the paper's README) and the backbone: the CNN backbones keep the paper's schedule
(lr 0.02, 300 epochs, milestones 200/250, batch 128), the fast heads on cached features train for
30 epochs with a learning rate suited to standardised features. The resolved config is what
``config.json`` in the run folder holds, and what a resumed run must match.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from clipcleaner_core.errors import ConfigError
from clipcleaner_core.presets import TRAIN_PRESETS as _PAPER_TRAIN_PRESETS

BACKBONES = ("linear", "mlp", "preact_resnet18", "resnet18", "resnet50")
HEAD_BACKBONES = ("linear", "mlp")
MODES = ("mixfix", "clean", "all")
DEVICES = ("auto", "cpu", "cuda")

# The fast heads: the schedule that suits a linear / MLP layer on standardised features.
HEAD_DEFAULTS = dict(epochs=30, lr=0.1, batch_size=128)
# Fields that may differ when a stopped run is resumed (they do not change what is learned so far).
RESUME_FREE_FIELDS = ("epochs", "device", "num_workers", "resume")
# Keys a run's config.json holds beside the TrainConfig fields (ignored when it is read back).
RUN_INFO_KEYS = ("test_labels", "run")


# Preset names used elsewhere (the selection presets name the CIFAR noise type) -> ours.
PRESET_ALIASES = {"cifar10-sym": "cifar10", "cifar100-sym": "cifar100"}


def canonical_preset(name: str | None) -> str | None:
    return PRESET_ALIASES.get(name, name) if name else name


# The paper's training presets (``clipcleaner_core.presets.TRAIN_PRESETS``), under our names and
# with ``batch`` spelled ``batch_size``.
TRAIN_PRESETS: dict[str, dict] = {
    canonical_preset(name): {("batch_size" if k == "batch" else k): v for k, v in values.items()}
    for name, values in _PAPER_TRAIN_PRESETS.items()
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Saved as ``config.json`` beside its checkpoints.

    Attributes:
        data: dataset spec ("demo", a folder, a manifest, a CIFAR folder).
        noise: synthetic label noise to apply first ("sym:0.4", "asym:0.2:1", "file:PATH"), as
            the selection was made on; None for the dataset's own labels.
        model: embedding model used by the linear / MLP heads and the default selection
            ("pixels" or an open_clip model name); ``pretrained`` its weights tag or local file.
        backbone: one of ``BACKBONES``.
        selection: score table (CSV / Parquet) or recipe JSON; None selects with the defaults.
        mode: "mixfix" (clean set + relabel-and-grow each epoch), "clean" (clean set only) or
            "all" (every given label: the baseline the gain is measured against).
        preset: dataset preset name in ``TRAIN_PRESETS`` (None: by dataset kind when one matches).
        epochs, batch_size, lr, milestones: SGD schedule (lr x0.1 at each milestone epoch).
        beta: mixup Beta(beta, beta) parameter; 0 turns mixup off.
        theta_r: confidence needed for an agreeing prediction to join the set.
        theta_r2: confidence needed for a disagreeing prediction to relabel a sample and join.
        holdout: held-out fraction used as the test split when the dataset has no test split.
        hidden: MLP hidden width. image_size: CNN input size (None: 32 for PreAct, 224 else).
        backbone_weights: local ImageNet weights for the torchvision ResNets (never downloaded).
        match_by_path: when ``selection`` was made on another version of the dataset, match its
            rows to the dataset by file path (only when that is exact) instead of stopping.
        amp: mixed precision on CUDA (always fp32 on CPU).
    """

    data: str = "demo"
    noise: str | None = None
    model: str = "pixels"
    pretrained: str | None = None
    backbone: str = "linear"
    selection: str | None = None
    match_by_path: bool = False
    mode: str = "mixfix"
    preset: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    milestones: tuple[int, ...] | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    beta: float | None = None
    theta_r: float | None = None
    theta_r2: float | None = None
    holdout: float = 0.2
    hidden: int = 512
    image_size: int | None = None
    backbone_weights: str | None = None
    amp: bool = True
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    resume: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in RUN_INFO_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown training config keys {unknown}; valid keys are {sorted(known)}"
            )
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        return cls(**{k: _typed(k, v, types[k]) for k, v in values.items()})

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _typed(name: str, value, annotation: str):
    """``value`` as the field's type ("int | None", "float", "bool", "tuple[int, ...] | None", ...),
    or ConfigError naming the key, the value and the type expected."""
    if value is None and "None" in annotation:
        return None
    if annotation.startswith("tuple"):
        if isinstance(value, (list, tuple)):
            return tuple(_typed(f"{name} entry", item, "int") for item in value)
    elif annotation.startswith("bool"):
        if isinstance(value, bool):
            return value
    elif annotation.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation.startswith("str"):
        if isinstance(value, str):
            return value
    else:
        return value
    expected = annotation.replace(" | None", " or null").replace("tuple[int, ...]", "a list of integers")
    raise ConfigError(f"training config {name}={value!r} must be {expected}; fix it in the config "
                      "file or on the command line")


def default_preset(dataset_kind: str | None) -> str | None:
    """The preset matching a dataset kind ("cifar10", "cifar100"), else None."""
    return dataset_kind if dataset_kind in TRAIN_PRESETS else None


def resolve_config(config: TrainConfig, *, dataset_kind: str | None = None) -> TrainConfig:
    """Fill every ``None`` schedule field from the preset and backbone; validate the result."""
    _validate(config)
    preset_name = canonical_preset(config.preset) or default_preset(dataset_kind)
    base = dict(TRAIN_PRESETS.get(preset_name) or TRAIN_PRESETS["cifar10"])
    if config.backbone in HEAD_BACKBONES:
        base.update(HEAD_DEFAULTS)
        base["milestones"] = None
    epochs = config.epochs if config.epochs is not None else int(base["epochs"])
    milestones = config.milestones
    if milestones is None:
        preset_ms, preset_epochs = base.get("milestones"), base["epochs"]
        if preset_ms is not None and epochs == preset_epochs:
            milestones = tuple(preset_ms)
        else:
            milestones = (round(epochs * 2 / 3), round(epochs * 5 / 6))
    # the preset's input size goes with the preset's backbone (ANIMAL-10N: PreAct ResNet-18 at 64 px)
    preset_size = base.get("image_size") if config.backbone == base.get("backbone") else None
    image_size = config.image_size or preset_size or (32 if config.backbone == "preact_resnet18" else 224)
    resolved = config.replace(
        preset=preset_name,
        epochs=epochs,
        batch_size=config.batch_size or int(base["batch_size"]),
        lr=config.lr if config.lr is not None else float(base["lr"]),
        milestones=tuple(int(m) for m in milestones),
        beta=config.beta if config.beta is not None else float(base["beta"]),
        theta_r=config.theta_r if config.theta_r is not None else float(base["theta_r"]),
        theta_r2=config.theta_r2 if config.theta_r2 is not None else float(base["theta_r2"]),
        image_size=image_size if config.backbone not in HEAD_BACKBONES else None,
    )
    _validate(resolved)
    return resolved


def _validate(config: TrainConfig) -> None:
    if config.backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {config.backbone!r}; choose one of {list(BACKBONES)}")
    if config.mode not in MODES:
        raise ConfigError(f"unknown training mode {config.mode!r}; choose one of {list(MODES)}")
    if config.device not in DEVICES:
        raise ConfigError(f"unknown device {config.device!r}; choose one of {list(DEVICES)}")
    if config.preset is not None and canonical_preset(config.preset) not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {config.preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
    if config.epochs is not None and config.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {config.epochs}")
    if config.batch_size is not None and config.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {config.batch_size}")
    if not 0.0 < config.holdout < 1.0:
        raise ConfigError(f"holdout must be a fraction in (0, 1), got {config.holdout}")
    for name in ("theta_r", "theta_r2"):
        value = getattr(config, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be a confidence in [0, 1], got {value}")
    if config.beta is not None and not 0 <= config.beta < math.inf:
        raise ConfigError(f"beta must be a number >= 0 (0 turns mixup off), got {config.beta}")
    if config.lr is not None and not 0 < config.lr < math.inf:
        raise ConfigError(f"lr must be a number > 0, got {config.lr}")
    for name in ("momentum", "weight_decay"):
        value = getattr(config, name)
        if not 0 <= value < math.inf:
            raise ConfigError(f"{name} must be a number >= 0, got {value}")
    for name in ("hidden", "num_workers", "image_size"):
        value = getattr(config, name)
        if value is not None and value < (0 if name == "num_workers" else 1):
            raise ConfigError(f"{name} must be {'>= 0' if name == 'num_workers' else '>= 1'}, got {value}")


def resume_key(config: TrainConfig) -> dict:
    """The part of a resolved config that must match for a stopped run to be resumed."""
    values = dataclasses.asdict(config)
    for name in RESUME_FREE_FIELDS:
        values.pop(name, None)
    values["milestones"] = list(values["milestones"] or ())
    if not values.get("match_by_path"):
        values.pop("match_by_path", None)  # runs made before the option existed still resume
    return values
