"""Datasets: where they come from, how their images are decoded, and synthetic label noise."""
from .cifar import load_cifar, read_cifar_pickle
from .dataset import BAD_FILE_COLUMNS, Dataset, empty_bad_files
from .demo import holdout_split, load_demo
from .features import pixel_features
from .images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    ImageLoadError,
    check_image_header,
    is_image_file,
    load_image,
    to_rgb,
)
from .manifest import load_manifest
from .noise import (
    CIFAR10_CLASSES,
    NOISE_MODES,
    NoiseSpec,
    apply_noise,
    asymmetric_cifar10_noise,
    flip_rate,
    instance_dependent_noise,
    noise_from_file,
    parse_noise_spec,
    save_noise,
    symmetric_noise,
)
from .sources import FORMATS, detect_format, load_dataset, load_imagefolder

__all__ = [
    "BAD_FILE_COLUMNS", "CIFAR10_CLASSES", "Dataset", "FORMATS", "IMAGE_EXTENSIONS", "ImageLoadError",
    "MAX_IMAGE_PIXELS", "NOISE_MODES", "NoiseSpec", "apply_noise", "asymmetric_cifar10_noise",
    "check_image_header", "detect_format", "empty_bad_files", "flip_rate", "holdout_split",
    "instance_dependent_noise", "is_image_file", "load_cifar", "load_dataset", "load_demo",
    "load_image", "load_imagefolder", "load_manifest", "noise_from_file", "parse_noise_spec",
    "pixel_features", "read_cifar_pickle", "save_noise", "symmetric_noise", "to_rgb",
]
