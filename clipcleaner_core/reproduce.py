"""Reproduce a row of the paper's tables: load, embed with CLIP, select, train with MixFix, evaluate.

:func:`reproduce` runs the paper's recipe for one dataset (DESIGN §2-3, presets from
:mod:`clipcleaner_core.presets`) and leaves one artifact per stage in the output folder::

    RUN_DIR/reproduce.json     the settings (a rerun with other settings is refused)
    RUN_DIR/selection.csv      the score table of the CLIP selection (+ .json sidecar)
    RUN_DIR/selection.json     its thresholds and metrics (precision / recall where truth is known)
    RUN_DIR/train/             the MixFix run folder (resumes from its last finished epoch)
    RUN_DIR/evaluation.json    accuracy on the test set(s)
    RUN_DIR/results.json / results.md   ours beside the paper's published numbers

A rerun skips every finished stage, so a killed run continues where it stopped. Training runs in
this process, or under ``torchrun`` over ``gpus`` GPUs (the trainer shards batches with DDP).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clipcleaner_core import atomic
from clipcleaner_core.errors import CLIPCleanerError, DataError
from clipcleaner_core.presets import PRESET_TABLE, preset_for
from clipcleaner_core.progress import Cancel, Progress, check_cancel, notify
from clipcleaner_core.reproduce_report import build_results, imagenet_val_accuracy, results_markdown

log = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100", "animal10n", "red-mini-imagenet", "webvision", "clothing1m")
SETTINGS, SELECTION, SELECTION_INFO, TRAIN_DIR = "reproduce.json", "selection.csv", "selection.json", "train"
EVALUATION, RESULTS, REPORT = "evaluation.json", "results.json", "results.md"
# settings that may change between a run and its resumption (they do not change the result)
RESUME_FREE = ("gpus", "device", "num_workers", "allow_download")

STAGES = ("data", "select", "train", "evaluate")


@dataclass(frozen=True)
class ReproduceConfig:
    """What to reproduce. ``None`` overrides take the preset's value (and the results say when one
    was overridden: then the run is not the paper's recipe).

    Attributes:
        dataset: one of :data:`DATASETS`.
        root: the dataset folder in its public layout (a CIFAR python folder for CIFAR).
        noise: CIFAR: "sym:0.5", "asym:0.4", "idn:0.4" (our generator) or "file:dependent0.4.csv"
            (the paper's IDN file); Red Mini-ImageNet: "red:0.4" or "blue:0.4"; others: None.
        gpus: training processes (torchrun when > 1).
        model, pretrained: the CLIP encoder (the paper: ViT-B-32, openai).
        imagenet_val: WebVision's second test set (default ROOT/imagenet_val when present).
    """

    dataset: str
    root: str
    noise: str | None = None
    gpus: int = 1
    model: str = "ViT-B-32"
    pretrained: str | None = "openai"
    imagenet_val: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    subsample: int | None = None
    backbone_weights: str | None = None
    device: str = "auto"
    num_workers: int = 4
    seed: int = 0
    allow_download: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise DataError(f"reproduce: unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.gpus < 1:
            raise DataError(f"reproduce: --gpus must be >= 1, got {self.gpus}")
        mode = self.noise_mode
        allowed = {"cifar10": ("sym", "asym", "idn", "file"), "cifar100": ("sym", "asym", "idn", "file"),
                   "red-mini-imagenet": ("red", "blue")}.get(self.dataset, ())
        if allowed and mode not in allowed:
            raise DataError(f"reproduce {self.dataset}: give the noise as one of "
                            f"{', '.join(m + ':RATE' for m in allowed)} (e.g. --noise {allowed[0]}:0.4)")
        if not allowed and mode is not None:
            raise DataError(f"reproduce {self.dataset}: its labels are already noisy; leave --noise out")

    @property
    def noise_mode(self) -> str | None:
        return self.noise.partition(":")[0].strip().lower() if self.noise else None

    @property
    def noise_rate(self) -> float | None:
        if not self.noise or self.noise_mode == "file":
            return _idn_rate(self.noise) if self.noise else None
        try:
            return float(self.noise.split(":")[1])
        except (IndexError, ValueError):
            raise DataError(f"reproduce: cannot read the noise rate in {self.noise!r}; write MODE:RATE, "
                            "e.g. sym:0.5") from None

    @property
    def preset(self) -> str:
        return preset_for(self.dataset, self.noise_mode)


def reproduce(config: ReproduceConfig, out: str | os.PathLike, *, cache_root=None,
              progress: Progress | None = None, cancel: Cancel | None = None) -> dict:
    """Run (or resume) every stage for ``config`` in ``out``; returns the results dict.

    ``progress(stage, done, total, rate)`` (:mod:`clipcleaner_core.progress`) hears the work
    inside the stages ("embed", "probe", ..., "train", "epoch") and ``"reproduce"`` with the
    number of the :data:`STAGES` finished; each stage's outcome is logged. ``cancel()`` is
    polled between stages and inside them, and raises
    :class:`~clipcleaner_core.errors.Cancelled`; a rerun resumes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    preset = PRESET_TABLE[config.preset]

    def finished(stage: str) -> None:
        notify(progress, "reproduce", STAGES.index(stage) + 1, len(STAGES))
        check_cancel(cancel, "reproduction")

    data = load_train_dataset(config, out)
    _say("data", f"{data.selected.name}: {len(data.selected)} training images, "
                 f"{data.selected.num_classes} classes")
    finished("data")
    selection = _selection_stage(config, out, data, cache_root, progress, cancel)
    finished("select")
    train_config = training_config(config, preset, data.spec, data.noise, out)
    run = _train_stage(config, out, train_config, cache_root, progress, cancel)
    finished("train")
    evaluation = _evaluation_stage(config, out, train_config, run, cache_root)
    finished("evaluate")
    results = build_results(config, preset, selection, train_config, evaluation)
    atomic.write_json(out / RESULTS, results)
    atomic.write_text(out / REPORT, results_markdown(results))
    _say("done", f"results in {out / REPORT}")
    return results


def _say(stage: str, message: str) -> None:
    """One line of the reproduction's story, in the log (the CLI shows it on stderr)."""
    log.info("%s: %s", stage, message)


# --- stage 0: the dataset as the paper uses it -----------------------------------------------------

class TrainingData(NamedTuple):
    """The dataset the selection is made on, and how the trainer finds the same rows.

    ``full`` is the dataset the trainer loads from ``spec`` (with ``noise`` applied); ``rows`` maps
    the rows of ``selected`` to rows of ``full`` (Clothing1M's balanced subsample), None when the
    two are the same dataset.
    """

    selected: object
    full: object
    spec: str
    noise: str | None = None
    rows: np.ndarray | None = None


def load_train_dataset(config: ReproduceConfig, out: Path) -> TrainingData:
    """Load the training set as the paper uses it (noise applied, subsample drawn)."""
    from clipcleaner_core.data import apply_noise, load_dataset
    from clipcleaner_core.data.noise import parse_noise_spec

    root = Path(config.root).expanduser()
    if config.dataset in ("cifar10", "cifar100"):
        dataset = load_dataset(root, format=config.dataset)
        spec = parse_noise_spec(config.noise)
        if spec.mode == "file":
            _check_idn_file(spec.path, dataset)
        dataset = apply_noise(dataset, spec, save_dir=out)
        return TrainingData(dataset, dataset, str(root), f"file:{dataset.noise['path']}")
    if config.dataset == "red-mini-imagenet":
        from clipcleaner_core.data.red_mini_imagenet import list_path

        listed = list_path(root, config.noise_mode, config.noise_rate)
        dataset = load_dataset(listed)
        return TrainingData(dataset, dataset, str(listed))
    dataset = load_dataset(root, format=config.dataset)
    subsample = config.subsample or PRESET_TABLE[config.preset].subsample
    if config.dataset == "clothing1m" and subsample and subsample < len(dataset):
        from clipcleaner_core.data.clothing1m import balanced_subsample

        rows = balanced_subsample(dataset.labels, subsample, num_classes=dataset.num_classes, seed=config.seed)
        subset = dataset.replace(labels=dataset.labels[rows], paths=tuple(dataset.paths[i] for i in rows),
                                 name=f"{dataset.name}-balanced{subsample}")
        return TrainingData(subset, dataset, str(root), rows=rows)
    return TrainingData(dataset, dataset, str(root))


def _check_idn_file(path: str, dataset) -> None:
    from clipcleaner_core.data.idn_files import check_clean_labels, is_label_pair_csv, read_label_pair_csv

    if is_label_pair_csv(path):
        check_clean_labels(path, read_label_pair_csv(path)[0], dataset.labels)


def _idn_rate(noise: str) -> float | None:
    """The rate in a published IDN file's name (``dependent0.4.csv`` -> 0.4), else None."""
    stem = Path(noise.partition(":")[2]).stem
    digits = stem.removeprefix("dependent")
    try:
        return float(digits) if digits != stem else None
    except ValueError:
        return None


def _check_settings(out: Path, config: ReproduceConfig) -> None:
    current = dataclasses.asdict(config)
    path = out / SETTINGS
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differs = sorted(k for k in current if k not in RESUME_FREE and saved.get(k) != current[k])
        if differs:
            raise CLIPCleanerError(f"{out} holds a reproduction with other settings (differs in {differs}); "
                                   "choose another --out folder, or delete that one to start over")
    atomic.write_json(path, current)


# --- stage 1: CLIP embeddings and the selection ------------------------------------------------------

def _selection_stage(config, out, data: TrainingData, cache_root, progress, cancel) -> dict:
    from clipcleaner_core.encoders import EncoderSpec
    from clipcleaner_core.export import export
    from clipcleaner_core.pipeline import prepare, select_samples
    from clipcleaner_core.selection import SelectionConfig

    dataset = data.selected
    key = {"dataset": dataset.fingerprint(), "model": config.model, "pretrained": config.pretrained,
           "preset": config.preset}
    info_path = out / SELECTION_INFO
    if info_path.exists() and (out / SELECTION).exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("key") == key:
            _say("select", f"done before: {info['metrics']['kept']} of {info['metrics']['n']} kept")
            return info
    _say("embed", f"{config.model} ({config.pretrained}) on {len(dataset)} images")
    spec = EncoderSpec(model=config.model, pretrained=config.pretrained,
                       device="cpu" if config.device == "cpu" else "auto")
    prepared = prepare(dataset, spec, cache_root=cache_root, allow_download=config.allow_download,
                       progress=progress, cancel=cancel)
    thresholds = SelectionConfig.from_preset(config.preset)
    result = select_samples(prepared, thresholds)
    table = result.table
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, (list, dict))}
    metrics.update(_partial_truth_metrics(dataset, table))
    meta = {"purpose": "reproduce", **prepared.describe()}
    if data.rows is not None:  # the trainer indexes the full training list
        table = table.assign(index=data.rows[table["index"].to_numpy()])
        meta["dataset"] = {**meta["dataset"], "name": data.full.name, "fingerprint": data.full.fingerprint(),
                           "n": len(data.full), "subsample": len(dataset)}
    export(table, "csv", out / SELECTION, class_names=dataset.class_names, meta=meta)
    info = {"key": key, "thresholds": dataclasses.asdict(result.config), "metrics": _plain(metrics),
            "notes": list(prepared.notes)}
    atomic.write_json(info_path, info)
    _say("select", f"{metrics['kept']} of {metrics['n']} kept" + (
        f", precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}" if "precision" in metrics else ""))
    return info


def _partial_truth_metrics(dataset, table) -> dict:
    """Precision / recall of the clean set where the truth is known only in part: which Red
    Mini-ImageNet web images are wrongly labelled, or Clothing1M's hand-checked subset."""
    if dataset.true_labels is not None:
        return {}
    rows = table["index"].to_numpy()
    kept = table["is_clean"].to_numpy(dtype=bool)
    if dataset.kind == "red-mini-imagenet":
        from clipcleaner_core.data.red_mini_imagenet import red_noisy_mask

        noisy = red_noisy_mask(dataset)
        if noisy is None:
            return {}
        truth, correct = "web-image annotations (noisy or not)", ~noisy[rows]
    elif dataset.kind == "clothing1m":
        from clipcleaner_core.data.clothing1m import clean_labels_of

        checked, clean_labels = clean_labels_of(dataset)
        if not len(checked):
            return {}
        known = np.isin(rows, checked)
        position = np.searchsorted(checked, rows[known])
        rows, kept = rows[known], kept[known]
        correct = dataset.labels[rows] == clean_labels[position]
        truth = f"the {len(rows)} hand-checked images (clean_label_kv.txt) among them"
    else:
        return {}
    return {"precision": float(correct[kept].mean()) if kept.any() else float("nan"),
            "recall": float(kept[correct].mean()) if correct.any() else float("nan"),
            "true_noise_rate": float(1 - correct.mean()), "truth": truth}


# --- stage 2: MixFix training --------------------------------------------------------------------

def training_config(config: ReproduceConfig, preset, spec: str, noise: str | None, out: Path):
    """The trainer's config for this reproduction (preset values unless overridden)."""
    from clipcleaner_core.train.config import TrainConfig

    return TrainConfig(
        data=spec, noise=noise, model=config.model, pretrained=config.pretrained,
        backbone=config.backbone or preset.backbone, selection=str(out / SELECTION), mode="mixfix",
        preset=config.preset, epochs=config.epochs or preset.epochs,
        batch_size=config.batch_size or preset.batch, lr=preset.lr,
        milestones=None if config.epochs not in (None, preset.epochs) else tuple(preset.milestones),
        beta=preset.beta, theta_r=preset.theta_r, theta_r2=preset.theta_r2,
        image_size=config.image_size or preset.image_size, backbone_weights=config.backbone_weights,
        device=config.device, num_workers=config.num_workers, seed=config.seed,
    )


def _train_stage(config, out, train_config, cache_root, progress, cancel) -> Path:
    from clipcleaner_core.train.rundir import RunDir

    run_dir = out / TRAIN_DIR
    status = RunDir(run_dir, writer=False).read_status()
    if status.get("state") == "finished" and status.get("epoch") == train_config.epochs:
        _say("train", f"done before: {status['epoch']} epochs")
        return run_dir
    _say("train", f"{train_config.backbone}, {train_config.epochs} epochs on {config.gpus} process(es)")
    if config.gpus > 1:
        _torchrun(config.gpus, train_config, out, run_dir)
    else:
        from clipcleaner_core.train.trainer import train

        train(train_config, run_dir=run_dir, cache_root=cache_root, progress=progress, cancel=cancel)
    return run_dir


def _torchrun(gpus: int, train_config, out: Path, run_dir: Path) -> None:
    config_path = out / "train_config.json"
    atomic.write_text(config_path, train_config.to_json())
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "clipcleaner_core", "train", "--config", str(config_path), "--out", str(run_dir)]
    log.info("launching %s", " ".join(argv))
    code = subprocess.call(argv)
    if code != 0:
        raise CLIPCleanerError(f"torchrun training exited with status {code}; see {run_dir / 'train.log'} "
                               "and rerun the same command to resume it")


# --- stage 3: evaluation -----------------------------------------------------------------------------

def _evaluation_stage(config, out, train_config, run_dir, cache_root) -> dict:
    from clipcleaner_core.train.rundir import RunDir

    path = out / EVALUATION
    run = RunDir(run_dir, writer=False)
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("epochs") == run.read_status().get("epoch"):
            return saved
    metrics = run.read_metrics()
    accs = [m["test_acc"] for m in metrics if m.get("test_acc") is not None]
    name = "webvision" if config.dataset == "webvision" else "test"
    tests = {name: {"best": max(accs) if accs else None, "last": accs[-1] if accs else None,
                    "n": run.read_config().get("run", {}).get("test_rows")}}
    if config.dataset == "webvision":
        second = imagenet_val_accuracy(config, train_config, run, cache_root)
        if second is not None:
            tests["ilsvrc12"] = second
    evaluation = {"epochs": metrics[-1]["epoch"] if metrics else 0, "tests": tests,
                  "final_set_size": metrics[-1].get("train_set_size") if metrics else None,
                  "final_label_precision": metrics[-1].get("label_precision") if metrics else None}
    atomic.write_json(path, evaluation)
    _say("evaluate", ", ".join(f"{k}: {v['best']:.4f}" for k, v in tests.items() if v.get("best") is not None))
    return evaluation


def _plain(values: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else (v.item() if hasattr(v, "item") else v))
            for k, v in values.items()}


# --- command line ------------------------------------------------------------------------------------

def add_parser(subparsers):
    """The ``reproduce`` subcommand of ``python -m clipcleaner_core``."""
    parser = subparsers.add_parser("reproduce", help="run the paper's recipe for one dataset end to end")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, metavar="PATH", help="the dataset folder in its public layout")
    parser.add_argument("--noise", metavar="MODE:RATE", help="CIFAR: sym:0.5, asym:0.4, idn:0.4 or "
                        "file:dependent0.4.csv; Red Mini-ImageNet: red:0.4 or blue:0.4")
    parser.add_argument("--gpus", type=int, default=1, help="training processes (torchrun when > 1)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR")
    parser.add_argument("--model", default="ViT-B-32", help="CLIP model (the paper: ViT-B-32)")
    parser.add_argument("--pretrained", default="openai", metavar="TAG|PATH", help="CLIP weights (the paper: openai)")
    parser.add_argument("--allow-download", action="store_true", help="let open_clip download the CLIP weights")
    parser.add_argument("--imagenet-val", metavar="PATH", help="WebVision: ImageNet val folder (default ROOT/imagenet_val)")
    parser.add_argument("--backbone-weights", metavar="PATH", help="local ImageNet weights for resnet50 (Clothing1M)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--num-workers", type=int, default=4, help="image decoding workers per process")
    parser.add_argument("--seed", type=int, default=0)
    for flag, kind, text in (("--epochs", int, "epochs"), ("--backbone", str, "backbone"),
                             ("--batch-size", int, "batch size"), ("--image-size", int, "image size"),
                             ("--subsample", int, "Clothing1M balanced subsample")):
        parser.add_argument(flag, type=kind, default=None,
                            help=f"override the preset's {text} (the run is then not the paper's recipe)")
    return parser


def run_command(args) -> int:
    """Run ``reproduce`` from parsed arguments; prints the results path and table."""
    fields = {f.name for f in dataclasses.fields(ReproduceConfig)}
    config = ReproduceConfig(**{k: v for k, v in vars(args).items() if k in fields})
    from clipcleaner_core.cli import stderr_progress

    logging.getLogger(__name__).setLevel(logging.INFO)  # each stage's outcome, on stderr
    results = reproduce(config, args.out, progress=stderr_progress)
    print(results_markdown(results))
    return 0
