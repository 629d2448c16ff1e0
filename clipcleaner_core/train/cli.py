"""``train``: the command line of the trainer.

Used as ``python -m clipcleaner_core train ...`` (the main CLI calls :func:`add_parser` and
:func:`run`), standalone as ``python -m clipcleaner_core.train.cli ...``, and under
``torchrun --nproc_per_node=N -m clipcleaner_core.train.cli ...`` for DDP.

Settings are layered: TrainConfig defaults < ``--config cfg.json`` < explicit flags. SIGTERM and
SIGINT stop the run between batches; the last finished epoch stays on disk and ``status.json`` says
"cancelled". Exit status: 0 finished, 2 bad input, 143 cancelled.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from clipcleaner_core.train.config import BACKBONES, DEVICES, PRESET_ALIASES, TRAIN_PRESETS, TrainConfig

log = logging.getLogger(__name__)

EXIT_CANCELLED = 143
# flag -> TrainConfig field, for the flags that map one to one
_FIELDS = {
    "data": "data", "noise": "noise", "model": "model", "pretrained": "pretrained", "backbone": "backbone",
    "selection": "selection", "preset": "preset", "epochs": "epochs", "batch_size": "batch_size",
    "lr": "lr", "beta": "beta", "theta_r": "theta_r", "theta_r2": "theta_r2",
    "holdout": "holdout", "hidden": "hidden", "image_size": "image_size",
    "backbone_weights": "backbone_weights", "device": "device", "num_workers": "num_workers",
    "seed": "seed", "match_by_path": "match_by_path",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The train command's flags; every default is None so a --config file can fill it."""
    parser.add_argument("--data", metavar="SPEC", help="'demo', an ImageFolder, a manifest or a CIFAR folder")
    parser.add_argument("--noise", metavar="MODE:RATE[:SEED]",
                        help="apply the synthetic noise the selection was made on (sym:0.4, file:PATH)")
    parser.add_argument("--model", help="embedding model for the heads and the default selection "
                        "('pixels' or an open_clip name); default pixels")
    parser.add_argument("--pretrained", metavar="TAG|PATH", help="open_clip weights tag or local file")
    parser.add_argument("--backbone", choices=BACKBONES, help="default linear (a head on cached features)")
    parser.add_argument("--selection", metavar="FILE",
                        help="score table (CSV/Parquet) or recipe (JSON); default: select with the "
                        "default thresholds first")
    parser.add_argument("--match-by-path", action="store_true", default=None,
                        help="if the dataset changed since --selection was made, match its rows to "
                        "the dataset by file path (only when every path is found exactly once)")
    parser.add_argument("--mixfix", action=argparse.BooleanOptionalAction, default=None,
                        help="grow and relabel the set after each epoch (default on); --no-mixfix "
                        "trains on the clean set only")
    parser.add_argument("--all-labels", action="store_true", default=None,
                        help="train on every given label (the baseline)")
    parser.add_argument("--preset", choices=sorted(TRAIN_PRESETS) + sorted(PRESET_ALIASES),
                        help="the paper's settings for a dataset")
    parser.add_argument("--config", metavar="cfg.json", help="a TrainConfig JSON (e.g. a run's config.json)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default: cache/runs/<hash>)")
    parser.add_argument("--device", choices=DEVICES)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --out (automatic when its config matches)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--beta", type=float, help="mixup Beta parameter (0: no mixup)")
    parser.add_argument("--theta-r", type=float, help="confidence for an agreeing sample to join")
    parser.add_argument("--theta-r2", type=float, help="confidence to relabel a disagreeing sample")
    parser.add_argument("--holdout", type=float, help="held-out test fraction (datasets without a test split)")
    parser.add_argument("--hidden", type=int, help="MLP hidden width")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--backbone-weights", metavar="PATH", help="local ImageNet weights for resnet18/50")
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--no-amp", action="store_true", default=None, help="fp32 on GPU too")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train a classifier on the cleaned set (MixFix)")
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, then the --config file, then every flag given."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(_read_config(args.config))
    for flag, field in _FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            values[field] = value
    if getattr(args, "all_labels", None):
        values["mode"] = "all"
    elif getattr(args, "mixfix", None) is not None:
        values["mode"] = "mixfix" if args.mixfix else "clean"
    if getattr(args, "resume", None):
        values["resume"] = True
    if getattr(args, "no_amp", None):
        values["amp"] = False
    return TrainConfig.from_dict(values)


def _read_config(path: str) -> dict:
    from clipcleaner_core.errors import ConfigError

    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist; give a TrainConfig JSON file such as a "
                          "run's config.json") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                          f"column {exc.colno}); fix the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path} cannot be read ({exc}); check the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of training settings, not "
                          f"{type(values).__name__}")
    return values


class _StopFlag:
    """Set by SIGTERM / SIGINT; polled by the trainer between batches."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self) -> bool:
        return self.stopped

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        log.warning("signal %d: stopping after the current batch", signum)
        self.stopped = True


def run(args: argparse.Namespace) -> int:
    """Run the train command; returns the exit status."""
    from clipcleaner_core.train.trainer import train

    from clipcleaner_core.cli import stderr_progress
    from clipcleaner_core.errors import Cancelled

    config = config_from_args(args)
    stop = _StopFlag()
    stop.install()
    try:
        result = train(config, run_dir=getattr(args, "out", None),
                       progress=stderr_progress if _is_rank0() else None, cancel=stop)
    except Cancelled as exc:
        if _is_rank0():
            print(f"cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    summary = {"run_dir": str(result.run_dir), "state": result.state, "epochs": result.epochs_done,
               "best_test_acc": result.best_test_acc, "final_test_acc": result.final_test_acc,
               "test_labels": result.test_labels}
    if _is_rank0():
        print(json.dumps(summary, indent=2))
    return 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str] | None = None) -> int:
    from clipcleaner_core.cli import run_handler

    parser = argparse.ArgumentParser(prog="python -m clipcleaner_core.train.cli",
                                     description="Train on the cleaned set (CLIPCleaner + MixFix).")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_handler(run, args)


if __name__ == "__main__":
    sys.exit(main())
