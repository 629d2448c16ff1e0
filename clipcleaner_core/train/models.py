"""Backbones: linear / MLP heads on cached features, PreAct ResNet-18, torchvision ResNets.

The heads standardise their input with the training features' mean and std, kept as buffers so a
checkpoint is self-contained. ImageNet weights for the torchvision ResNets are only ever read from a
local file (``backbone_weights`` or torchvision's cache folder); nothing is downloaded.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipcleaner_core.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger(__name__)

_TORCHVISION_WEIGHT_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
}


class Standardize(nn.Module):
    """x -> (x - mean) / std with fixed per-feature statistics."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_stats(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def linear_head(dim: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(Standardize(dim), nn.Linear(dim, num_classes))


def mlp_head(dim: int, num_classes: int, hidden: int = 512) -> nn.Sequential:
    return nn.Sequential(
        Standardize(dim), nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., 2016): BN-ReLU-conv, BN-ReLU-conv, plus shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32x32 inputs: 3x3 stem, four stages of two blocks (64-128-256-512)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        stages, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride),
                                        PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(x))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def build_model(
    backbone: str,
    *,
    num_classes: int,
    feature_dim: int | None = None,
    hidden: int = 512,
    backbone_weights: str | None = None,
) -> nn.Module:
    """A fresh model for ``backbone`` (see ``config.BACKBONES``)."""
    if backbone == "linear":
        return linear_head(_need_dim(feature_dim), num_classes)
    if backbone == "mlp":
        return mlp_head(_need_dim(feature_dim), num_classes, hidden)
    if backbone == "preact_resnet18":
        return PreActResNet18(num_classes)
    if backbone in ("resnet18", "resnet50"):
        return _torchvision_resnet(backbone, num_classes, backbone_weights)
    raise ConfigError(f"unknown backbone {backbone!r}")


def _need_dim(feature_dim: int | None) -> int:
    if not feature_dim:
        raise ConfigError("the linear / mlp heads need the feature dimension")
    return int(feature_dim)


def _torchvision_resnet(name: str, num_classes: int, weights_path: str | None) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    path = _find_imagenet_weights(name, weights_path)
    if path is not None:
        state = {k: v for k, v in _load_state(path).items() if not k.startswith("fc.")}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensors of the wrong shapes
            raise WeightsUnavailableError(
                f"{path} does not hold {name} weights ({str(exc).strip().splitlines()[-1][:200]}); "
                f"pass a torchvision {name} checkpoint as --backbone-weights.") from None
        if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
            raise WeightsUnavailableError(
                f"{path} does not hold {name} weights (unexpected {unexpected[:3]}, missing "
                f"{missing[:3]}); pass a torchvision {name} checkpoint as --backbone-weights."
            )
        log.info("loaded ImageNet weights for %s from %s", name, path)
    else:
        log.info("no local ImageNet weights for %s: training from scratch", name)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _find_imagenet_weights(name: str, weights_path: str | None) -> Path | None:
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"backbone weights file {path} does not exist; give the path of a local "
                f"torchvision {name} checkpoint (.pth or .safetensors), or leave it out to train "
                "from scratch."
            )
        return path
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    names = _TORCHVISION_WEIGHT_FILES[name]
    for file_name in (names,) if isinstance(names, str) else names:
        if (hub / file_name).is_file():
            return hub / file_name
    return None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (safetensors, or torch weights loaded with weights_only=True).

    Anything else, a pickle carrying code included, is refused with a WeightsUnavailableError.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling, safetensors, zip and OS errors alike
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError(
            f"backbone weights {path} cannot be loaded safely ({type(exc).__name__}: {reason}); only "
            "safetensors files and plain torch state dicts are read (code inside a pickle is never "
            "run): pass a torchvision checkpoint, or leave --backbone-weights out.") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"backbone weights {path} is not a state dict of tensors; pass a "
                                      "torchvision checkpoint (.pth or .safetensors).")
    return state
