"""Batches for the trainer: feature rows straight from a tensor, images through torchvision.

CIFAR-sized images (<= 64 px) train with RandomCrop(pad 4), RandomHorizontalFlip and
AutoAugment(CIFAR10); larger ones with RandomResizedCrop and a flip. Evaluation never augments.
"""
from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

log = logging.getLogger(__name__)

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMALL_IMAGE = 64


def image_transforms(size: int, *, train: bool) -> T.Compose:
    """The training (augmenting) or evaluation transform for ``size`` x ``size`` inputs."""
    if size <= SMALL_IMAGE:
        norm = T.Normalize(CIFAR_MEAN, CIFAR_STD)
        if not train:
            return T.Compose([T.Resize((size, size)), T.ToTensor(), norm])
        return T.Compose([
            T.Resize((size, size)), T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), T.ToTensor(), norm,
        ])
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if not train:
        return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm])
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])


class ImageRows(torch.utils.data.Dataset):
    """Image ``i`` of an in-memory (n, H, W, 3) uint8 array or of a tuple of file paths."""

    def __init__(self, images, transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if isinstance(self.images, np.ndarray):
            image = Image.fromarray(self.images[i])
        else:
            image = _load_file(self.images[i])
        return self.transform(image), i


def _load_file(path: str) -> Image.Image:
    from clipcleaner_core.data.images import ImageLoadError, load_image

    try:
        return load_image(path)
    except ImageLoadError as exc:  # a file that broke after selection: train on a blank image
        log.warning("using a blank image for %s: %s", path, exc)
        return Image.new("RGB", (32, 32))


class Batches:
    """Turns lists of row indices into (inputs, row_indices) batches on ``device``."""

    def __init__(self, inputs, *, device: torch.device, image_size: int | None, train: bool,
                 num_workers: int = 0) -> None:
        self.device = device
        self.num_workers = num_workers
        self.features = None
        if isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            self.features = torch.from_numpy(np.ascontiguousarray(inputs)).to(device)
        else:
            self.rows = ImageRows(inputs, image_transforms(image_size or 32, train=train))

    def __call__(self, batches: Sequence[np.ndarray]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        if self.features is not None:
            for idx in batches:
                yield self.features[torch.from_numpy(np.asarray(idx)).to(self.device)], idx
            return
        loader = torch.utils.data.DataLoader(
            self.rows, batch_sampler=[list(map(int, b)) for b in batches],
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for images, idx in loader:
            yield images.to(self.device, non_blocking=True), idx.numpy()


def sequential_batches(n: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """This rank's share of rows 0..n-1 (every world_size-th row), in batches."""
    rows = np.arange(rank, n, world_size)
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
