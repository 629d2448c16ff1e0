"""The run folder contract: every file a training run leaves behind, each written atomically.

RUN_DIR/
  config.json        the resolved TrainConfig fields, plus "test_labels" and a "run" block
  metrics.jsonl      one JSON object per finished epoch (see ``METRIC_KEYS``)
  best.safetensors   weights of the epoch with the best test accuracy
  last.safetensors   weights after the last finished epoch (metadata: epoch, config)
  last_state.pt      optimizer / scaler state, epoch, current set and labels: tensors and plain
                     containers only, read back with ``torch.load(weights_only=True)``
  train.log          the run's log (appended)
  status.json        {state: running|finished|failed|cancelled, epoch, epochs, heartbeat, ...}
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clipcleaner_core import atomic

CONFIG = "config.json"
METRICS = "metrics.jsonl"
BEST = "best.safetensors"
LAST = "last.safetensors"
LAST_STATE = "last_state.pt"
LOG = "train.log"
STATUS = "status.json"
STATES = ("running", "finished", "failed", "cancelled")
METRIC_KEYS = ("epoch", "loss", "test_acc", "train_set_size", "relabel_count", "label_precision",
               "lr", "time")


class RunDir:
    """Reads and writes one run folder. Only rank 0 constructs one with ``writer=True``."""

    def __init__(self, path: str | os.PathLike, *, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)

    # --- status and config -------------------------------------------------------------------
    def write_status(self, state: str, *, epoch: int, epochs: int, **extra) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; one of {list(STATES)}")
        if self.writer:
            atomic.write_json(self.path / STATUS, {
                "state": state, "epoch": int(epoch), "epochs": int(epochs),
                "heartbeat": time.time(), "pid": os.getpid(), **extra})

    def read_status(self) -> dict:
        return _read_json(self.path / STATUS)

    def write_config(self, config_values: dict) -> None:
        if self.writer:
            atomic.write_json(self.path / CONFIG, config_values)

    def read_config(self) -> dict:
        return _read_json(self.path / CONFIG)

    # --- metrics -------------------------------------------------------------------------------
    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.jsonl with ``rows`` (atomic: readers never see a half line)."""
        if self.writer:
            text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
            atomic.write_text(self.path / METRICS, text)

    # --- checkpoints ---------------------------------------------------------------------------
    def save_weights(self, name: str, model: torch.nn.Module, *, epoch: int, config_json: str) -> None:
        if not self.writer:
            return
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic.atomic_path(self.path / name) as tmp:
            save_file(state, str(tmp), metadata={"epoch": str(epoch), "config": config_json})

    def load_weights(self, name: str) -> tuple[dict[str, torch.Tensor], int]:
        """(state_dict, epoch) of a weights file."""
        from safetensors import safe_open

        path = self.path / name
        with safe_open(str(path), framework="pt") as handle:
            epoch = int((handle.metadata() or {}).get("epoch", -1))
        return load_file(str(path)), epoch

    def save_state(self, state: dict) -> None:
        if self.writer:
            with atomic.atomic_path(self.path / LAST_STATE) as tmp:
                torch.save(state, tmp)

    def load_state(self) -> dict | None:
        path = self.path / LAST_STATE
        if not (path.exists() and (self.path / LAST).exists()):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    # --- log -----------------------------------------------------------------------------------
    def log_handler(self) -> logging.Handler:
        handler = logging.FileHandler(self.path / LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
