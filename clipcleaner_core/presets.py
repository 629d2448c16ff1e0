"""The paper's selection and training presets: one table that the CLI, the pages and the trainer read.

Values come from the runs in the paper's README (DESIGN §2); where the README gives none (the
CIFAR-10 asymmetric case, Clothing1M) the paper's code defaults apply, and ``source`` says so.
``backbone`` / ``image_size`` are the closest networks our trainer offers; ``paper_backbone``
names the one the paper trained, where it differs.

Derived views keep their old shapes: :data:`PRESETS` (selection thresholds, read by
``SelectionConfig.from_preset`` and the Tune page) and :data:`TRAIN_PRESETS` (MixFix schedule,
read by the trainer's config and the Train page). :data:`PAPER_RESULTS` holds the published test
accuracies (in %) that ``reproduce`` reports ours beside.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from clipcleaner_core.errors import DataError


@dataclass(frozen=True)
class Preset:
    """One dataset's recipe. Thresholds in [0, 1]; ``milestones`` are epochs where lr x 0.1."""

    dataset: str
    theta_gmm: float = 0.5
    theta_cons: float = 0.8
    beta: float = 1.0
    theta_r: float = 0.8
    theta_r2: float = 0.8
    epochs: int = 300
    milestones: tuple[int, ...] = (200, 250)
    lr: float = 0.02
    batch: int = 128
    backbone: str = "preact_resnet18"
    image_size: int = 32
    paper_backbone: str | None = None
    subsample: int | None = None
    source: str = "the paper's README"


PRESET_TABLE: dict[str, Preset] = {
    "cifar10-sym": Preset("cifar10"),
    "cifar100-sym": Preset("cifar100"),
    "cifar10-idn": Preset("cifar10", theta_r=1.0, theta_r2=1.0),
    "animal10n": Preset("animal10n", beta=0.5, theta_r=0.7, theta_r2=0.95, image_size=64,
                        paper_backbone="VGG-19-BN (64 px)"),
    "red-mini-imagenet": Preset("red-mini-imagenet", batch=64, beta=4.0, theta_r2=0.95),
    "webvision": Preset("webvision", theta_cons=1.0, batch=64, epochs=150, milestones=(80, 120),
                        beta=0.5, theta_r=0.7, theta_r2=1.0, backbone="resnet50", image_size=299,
                        paper_backbone="InceptionResNetV2 (299 px)"),
    "clothing1m": Preset("clothing1m", backbone="resnet50", image_size=224, subsample=128_000,
                         paper_backbone="ResNet-50, ImageNet-pretrained",
                         source="the paper's code defaults (its README gives no Clothing1M run)"),
}

_SELECTION_KEYS = ("theta_gmm", "theta_cons")
_TRAIN_KEYS = ("beta", "theta_r", "theta_r2", "epochs", "milestones", "lr", "batch", "backbone",
               "image_size")

#: the paper's rule looks at each sample alone: its presets switch the neighbour scores off
_NEIGHBOURS_OFF = {"use_knn_agreement": False, "use_lemon": False, "combine": "all"}
#: "paper + neighbours": the paper's default thresholds plus the neighbour scores (beyond the
#: paper; clipcleaner_core/neighbours.py; benchmarks/bench_neighbours.py measures it)
PAPER_WITH_NEIGHBOURS = "paper + neighbours"
_WITH_NEIGHBOURS = {"theta_gmm": 0.5, "theta_cons": 0.8, "theta_knn": 0.3,
                    "use_knn_agreement": True, "use_lemon": True, "combine": "majority"}

PRESETS: dict[str, dict] = {
    **{name: {**{k: asdict(p)[k] for k in _SELECTION_KEYS}, **_NEIGHBOURS_OFF}
       for name, p in PRESET_TABLE.items()},
    PAPER_WITH_NEIGHBOURS: _WITH_NEIGHBOURS,
}
"""Selection settings per preset: ``{"theta_gmm": 0.5, "theta_cons": 0.8, "use_knn_agreement":
False, "use_lemon": False}`` for the paper's datasets; ``"paper + neighbours"`` turns the
neighbour scores on (the trusted kNN vote with ``theta_knn`` its threshold, and LEMoN where text
features exist) and keeps a sample that passes at least half of the enabled scores
(``combine="majority"``: with the neighbours in, an intersection loses more clean samples than
noisy ones; see benchmarks/bench_neighbours.py); each enabled score is one vote (counting the
kNN vote and LEMoN as one vote lowered F1 on each of 6 draws of the synthetic case with text,
0.9825-0.9873 against 0.9850-0.9918). Its ``label_score`` is the weighted mean of the enabled
scores: the paper's evidence about the sample plus its neighbours' evidence, the neighbour scores
counting together as one (``selection.label_score_weights``)."""

TRAIN_PRESETS: dict[str, dict] = {name: {k: asdict(p)[k] for k in _TRAIN_KEYS} for name, p in PRESET_TABLE.items()}
"""MixFix schedule per preset: beta, theta_r, theta_r2, epochs, milestones, lr, batch, and the
preset's backbone with its input size."""

PAPER_RESULTS: dict[str, dict] = {
    "cifar100-sym": {0.2: {"test": 78.2}, 0.5: {"test": 75.2}, 0.8: {"test": 69.7}, 0.9: {"test": 63.1}},
    "webvision": {None: {"webvision": 81.6, "ilsvrc12": 77.8}},
    "clothing1m": {None: {"test": 74.9}},
    "red-mini-imagenet": {0.8: {"test": 43.82}},
}
"""Published top-1 test accuracy (%): preset -> noise rate (None: the dataset's own noise) -> test set."""


def preset_for(dataset: str, noise_mode: str | None = None) -> str:
    """The preset name for a dataset kind and noise mode ("sym", "asym", "idn", "file", "red", ...).

    CIFAR with an IDN file or the IDN generator gets "cifar10-idn"; other CIFAR noise the "-sym"
    recipe (the README gives no other); the paper's real-noise datasets their own.

    Examples
    --------
    >>> from clipcleaner_core.presets import PRESETS, preset_for
    >>> preset_for("cifar10", "sym"), preset_for("cifar10", "idn"), preset_for("animal10n")
    ('cifar10-sym', 'cifar10-idn', 'animal10n')
    >>> PRESETS[preset_for("webvision")]["theta_cons"]
    1.0
    """
    if dataset in ("cifar10", "cifar100"):
        if dataset == "cifar10" and noise_mode in ("idn", "file"):
            return "cifar10-idn"
        return f"{dataset}-sym"
    if dataset in PRESET_TABLE:
        return dataset
    raise DataError(f"no paper preset for dataset {dataset!r}; presets exist for "
                     f"cifar10, cifar100, {', '.join(n for n in PRESET_TABLE if not n.startswith('cifar'))}")


def paper_result(preset: str, rate: float | None) -> dict | None:
    """The published accuracies (%) for ``preset`` at noise ``rate``, or None when none is known.

    Examples
    --------
    >>> from clipcleaner_core.presets import paper_result
    >>> paper_result("cifar100-sym", 0.5), paper_result("cifar100-sym", 0.3)
    ({'test': 75.2}, None)
    """
    for known, values in PAPER_RESULTS.get(preset, {}).items():
        if (known is None and rate is None) or (known is not None and rate is not None
                                                and abs(known - rate) < 1e-9):
            return values
    return None
