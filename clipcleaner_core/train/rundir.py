"""The run folder contract: every file a training run leaves behind, each written atomically.

RUN_DIR/
  config.json        the resolved TrainConfig fields, plus "test_labels" and a "run" block
  metrics.jsonl      one JSON object per finished epoch (see ``METRIC_KEYS``)
  best.safetensors   weights of the epoch with the best test accuracy
  last.safetensors   weights after the last finished epoch (metadata: epoch, config)
  last_state.pt      the resume point, one file written atomically: the model's weights,
                     optimizer / scaler state, epoch, current set and labels, best epoch and the
                     metrics rows; tensors and plain containers only, read back with
                     ``torch.load(weights_only=True)``
  train.log          the run's log (appended)
  status.json        {state: running|finished|failed|cancelled, epoch, epochs, heartbeat, ...}

Kill-safety: last_state.pt is written first after each epoch and is the only file a resume
needs; last/best.safetensors and metrics.jsonl are copies derived from it. A run killed at any
instant resumes from the last state that reached the disk, and rewrites the derived files that
lag behind it (:meth:`RunDir.sync_outputs`).
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from clipcleaner_core import atomic
from clipcleaner_core.errors import CLIPCleanerError

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
    def save_weights(self, name: str, weights: torch.nn.Module | dict, *, epoch: int,
                     config_json: str) -> None:
        """Write a model's (or a state dict's) weights as ``name`` with the epoch in its metadata."""
        if not self.writer:
            return
        if isinstance(weights, torch.nn.Module):
            weights = cpu_state_dict(weights)
        # serialised in memory and written with ordinary writes: a full disk is a StorageError
        atomic.write_bytes(self.path / name, save_bytes(
            weights, metadata={"epoch": str(epoch), "config": config_json}))

    def load_weights(self, name: str) -> tuple[dict[str, torch.Tensor], int]:
        """(state_dict, epoch) of a weights file."""
        return load_file(str(self.path / name)), self.weights_epoch(name)

    def weights_epoch(self, name: str) -> int | None:
        """The epoch recorded in a weights file; None when it is missing or unreadable."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.path / name), framework="pt") as handle:
                return int((handle.metadata() or {}).get("epoch", -1))
        except Exception:  # noqa: BLE001 - absent, truncated or foreign: the state rewrites it
            return None

    def save_state(self, state: dict) -> None:
        """Write the resume point (one atomic file; see the module doc)."""
        if self.writer:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            atomic.write_bytes(self.path / LAST_STATE, buffer.getvalue())

    def load_state(self) -> dict | None:
        """The saved resume point, or None when there is none.

        A state of an older version, which kept the weights only in last.safetensors, counts
        only when that file exists.
        """
        path = self.path / LAST_STATE
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
            raise CLIPCleanerError(f"cannot read the resume point {path}: it is damaged or not a "
                                   f"checkpoint this app wrote ({type(exc).__name__}); delete the folder "
                                   f"{self.path} to start the run over") from exc
        if "model" not in state and not (self.path / LAST).exists():
            return None
        return state

    def sync_outputs(self, state: dict, *, config_json: str) -> list[str]:
        """Rewrite the files derived from ``state`` that a kill left behind it; returns their names."""
        if not self.writer or "model" not in state:
            return []
        epoch, rewritten = int(state["epoch"]), []
        targets = [(LAST, epoch)]
        if state.get("best_epoch") == epoch:
            targets.append((BEST, epoch))
        for name, wanted in targets:
            if self.weights_epoch(name) != wanted:
                self.save_weights(name, state["model"], epoch=epoch, config_json=config_json)
                rewritten.append(name)
        rows = [dict(row) for row in state.get("metrics", [])]
        if self.read_metrics_safely() != rows:
            self.write_metrics(rows)
            rewritten.append(METRICS)
        return rewritten

    def read_metrics_safely(self) -> list[dict] | None:
        try:
            return self.read_metrics()
        except (OSError, ValueError):
            return None

    # --- log -----------------------------------------------------------------------------------
    def log_handler(self) -> logging.Handler:
        handler = logging.FileHandler(self.path / LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        return handler


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
