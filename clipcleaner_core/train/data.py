"""Training inputs: which rows train, with which start set S0 and labels, and the test split.

:func:`load_train_data` turns (config, dataset, selection) into a :class:`TrainData`: arrays over
the training rows only (held-out and undecodable rows, and rows a reviewer dropped, are excluded),
plus the test inputs and labels. The selection comes from a score table (CSV / Parquet / DataFrame),
a recipe JSON (its selection thresholds), or the default thresholds via the pipeline.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from clipcleaner_core.data.paper import PAPER_FORMATS
from clipcleaner_core.data.match import align_table
from clipcleaner_core.errors import DataError
from clipcleaner_core.progress import Progress
from clipcleaner_core.train.config import HEAD_BACKBONES, TrainConfig

log = logging.getLogger(__name__)

CIFAR_KINDS = ("cifar10", "cifar100")
SPLIT_KINDS = CIFAR_KINDS + tuple(PAPER_FORMATS)  # datasets with their own test split
HOLDOUT_SEED = 0  # the held-out test split does not move with the training seed
TRUE_LABELS = "true"
GIVEN_LABELS = "given (noisy)"


@dataclass(frozen=True, eq=False)
class TrainData:
    """Arrays over the n training rows, plus the test split.

    Inputs are (n, D) float32 features for the heads, an (n, H, W, 3) uint8 array or a tuple of n
    image file paths for the CNNs. ``s0_mask`` is the clean start set, ``s0_labels`` its labels
    (a reviewer's correction where there is one). ``test_labels_kind`` is "true" or "given (noisy)".
    """

    class_names: tuple[str, ...]
    train_inputs: object
    index: np.ndarray
    given_labels: np.ndarray
    s0_mask: np.ndarray
    s0_labels: np.ndarray
    true_labels: np.ndarray | None
    test_inputs: object
    test_labels: np.ndarray
    test_labels_kind: str
    notes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_dim(self) -> int | None:
        return self.train_inputs.shape[1] if _is_features(self.train_inputs) else None

    def describe(self) -> dict:
        return {"train_rows": int(len(self.index)), "s0_size": int(self.s0_mask.sum()),
                "test_rows": int(len(self.test_labels)), "test_labels": self.test_labels_kind,
                "num_classes": self.num_classes, "notes": list(self.notes)}


def _is_features(inputs) -> bool:
    return isinstance(inputs, np.ndarray) and inputs.ndim == 2


def load_train_data(
    config: TrainConfig,
    *,
    dataset=None,
    features: np.ndarray | None = None,
    selection: pd.DataFrame | None = None,
    cache_root: str | Path | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainData:
    """Build the training rows, start set and test split for ``config`` (see module doc).

    ``features`` (N, D) are per-dataset-row features for the heads (else embedded with
    ``config.model``); ``selection`` is a score table (else ``config.selection`` or the defaults).
    ``progress(stage, done, total, rate)`` hears the embedding and the default selection;
    ``cancel()`` returning True stops them (:class:`~clipcleaner_core.errors.Cancelled`).
    """
    if dataset is None:
        from clipcleaner_core.data import load_dataset

        dataset = load_dataset(config.data)
    n = len(dataset)
    notes: list[str] = []
    valid = np.ones(n, dtype=bool)  # trainable: in the selection table and not dropped
    decodable = np.ones(n, dtype=bool)
    embedding = None
    if config.mode == "all":
        clean, final = np.ones(n, dtype=bool), dataset.labels.copy()
    elif selection is not None:
        clean, final, valid = selection_from_table(
            align_table(selection, dataset, source="the selection table", by_path=config.match_by_path,
                        by_path_hint="match_by_path=True"), dataset)
    elif config.selection and Path(config.selection).suffix.lower() != ".json":
        clean, final, valid = selection_from_table(_checked_table(config, dataset), dataset)
    else:
        clean, final, valid, embedding = _default_selection(config, dataset, cache_root, progress,
                                                            cancel)
        notes.append("selected with the default thresholds" if not config.selection
                     else f"selected with the thresholds of {config.selection}")
        if config.selection and (note := recipe_note(config.selection, dataset)):
            notes.append(note)

    needs_features = config.backbone in HEAD_BACKBONES
    if needs_features and features is None:
        embedding = embedding or _embed(config, dataset, cache_root, progress, cancel)
        features = np.asarray(embedding.image_features, dtype=np.float32)
        decodable = np.asarray(embedding.valid, dtype=bool)
    inputs = _inputs(dataset, features if needs_features else None)

    if dataset.kind in SPLIT_KINDS:
        train_rows = np.arange(n)
        test_inputs, test_labels, kind = _cifar_test(config, dataset, needs_features, cache_root)
    else:
        train_rows, test_rows = _holdout(dataset, config.holdout)
        test_rows = test_rows[decodable[test_rows]]
        test_inputs = _take(inputs, test_rows)
        truth = dataset.true_labels
        test_labels = (truth if truth is not None else dataset.labels)[test_rows]
        kind = TRUE_LABELS if truth is not None else GIVEN_LABELS
        notes.append(f"held out {len(test_rows)} samples ({config.holdout:.0%}) as the test split")
    train_rows = train_rows[valid[train_rows] & decodable[train_rows]]
    truth = dataset.true_labels
    return TrainData(
        class_names=dataset.class_names, train_inputs=_take(inputs, train_rows), index=train_rows,
        given_labels=dataset.labels[train_rows], s0_mask=clean[train_rows],
        s0_labels=final[train_rows].astype(np.int64),
        true_labels=None if truth is None else truth[train_rows],
        test_inputs=test_inputs, test_labels=np.asarray(test_labels, dtype=np.int64),
        test_labels_kind=kind, notes=tuple(notes),
    )


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a score table from CSV, Parquet or JSON (with the dtypes it was written with)."""
    from clipcleaner_core.export import read_table as read_score_table

    path = Path(path)
    if not path.is_file():
        raise DataError(f"selection file {path} does not exist; export a score table (CSV or "
                        "Parquet) or a recipe (JSON) from the app, or leave --selection out.")
    return read_score_table(path)


def _checked_table(config: TrainConfig, dataset) -> pd.DataFrame:
    """The ``--selection`` table, checked against (or matched by path to) the dataset it names."""
    from clipcleaner_core.atomic import read_sidecar

    table = read_table(config.selection)
    recorded = read_sidecar(config.selection).get("dataset")
    return align_table(table, dataset, recorded=recorded, source=str(config.selection),
                       by_path=config.match_by_path, by_path_hint="pass --match-by-path",
                       rerun_hint=f"select again on --data {config.data} and pass the new table")


def selection_from_table(table: pd.DataFrame, dataset) -> tuple[np.ndarray, ...]:
    """(clean_mask, final_labels, usable) over dataset rows from a score table.

    Rows missing from the table, with an unreadable ``final_label`` or a "drop" review decision
    are not used for training at all; the others train from S0 = ``is_clean`` rows with their
    ``final_label`` (``given_label`` when the column is missing).
    """
    missing = [c for c in ("index", "is_clean") if c not in table.columns]
    if missing:
        raise DataError(f"the selection table lacks column(s) {missing}; it needs index, "
                        "is_clean and final_label (the score table the app exports).")
    n = len(dataset)
    index = table["index"].to_numpy(dtype=np.int64)
    if len(index) and (index.min() < 0 or index.max() >= n):
        raise DataError(f"the selection table's index runs to {index.max()} but the dataset "
                        f"{dataset.name!r} has {n} samples; was it exported from another dataset?")
    label_col = "final_label" if "final_label" in table.columns else "given_label"
    labels = _label_ids(table[label_col] if label_col in table.columns else None, dataset, index)
    usable = np.zeros(n, dtype=bool)
    clean = np.zeros(n, dtype=bool)
    final = dataset.labels.copy()
    ok = labels >= 0
    if "review_decision" in table.columns:
        ok &= table["review_decision"].astype(str).str.lower().to_numpy() != "drop"
    usable[index[ok]] = True
    clean[index[ok]] = table["is_clean"].astype(bool).to_numpy()[ok]
    final[index[ok]] = labels[ok]
    return clean, final, usable


def _label_ids(column, dataset, index: np.ndarray) -> np.ndarray:
    """Labels as class ids; -1 where missing or not a class of the dataset."""
    if column is None:
        return dataset.labels[index]
    names = {name: k for k, name in enumerate(dataset.class_names)}
    out = np.full(len(column), -1, dtype=np.int64)
    for row, value in enumerate(column.tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, str) and value in names:
            out[row] = names[value]
            continue
        try:
            k = int(value)
        except (TypeError, ValueError):
            continue
        out[row] = k if 0 <= k < dataset.num_classes else -1
    return out


def _default_selection(config, dataset, cache_root, progress, cancel=None):
    from clipcleaner_core.pipeline import prepare, select_samples
    from clipcleaner_core.selection import SelectionConfig

    values = _selection_values(config)
    prepared = prepare(dataset, _encoder_spec(config), cache_root=cache_root, progress=progress,
                       cancel=cancel)
    result = select_samples(prepared, SelectionConfig(**values))
    clean, final, valid = selection_from_table(result.table, dataset)
    return clean, final, valid, prepared.embedding


def _selection_values(config) -> dict:
    """Selection thresholds: the recipe's, else the dataset preset's, else the defaults."""
    from clipcleaner_core.presets import PRESETS
    from clipcleaner_core.selection import SelectionConfig

    fields = {f.name for f in dataclasses.fields(SelectionConfig)}
    name = next((p for p in (config.preset, f"{config.preset}-sym") if p in PRESETS), None)
    values = dict(PRESETS[name]) if name is not None else {}
    if config.selection:
        settings = _read_recipe(config.selection).get("settings")
        settings = settings if isinstance(settings, dict) else _read_recipe(config.selection)
        found = settings.get("selection", settings)  # an exported recipe keeps them under "settings"
        values.update(found if isinstance(found, dict) else {})
    return {k: v for k, v in values.items() if k in fields}


def _read_recipe(path) -> dict:
    try:
        recipe = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"recipe {path} does not exist; export one from the app or leave "
                        "--selection out") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"recipe {path} cannot be read ({exc}); export it again") from None
    if not isinstance(recipe, dict):
        raise DataError(f"recipe {path} is not a JSON object; export it again from the app")
    return recipe


def recipe_note(path, dataset) -> str | None:
    """A note when the recipe at ``path`` was made on another version of ``dataset``, else None.

    A recipe carries thresholds, not rows: they are applied to the dataset as it is now, so a
    change is reported (in the run's notes and the log), not refused.
    """
    recorded = _read_recipe(path).get("dataset") or {}
    if not isinstance(recorded, dict) or not recorded.get("fingerprint"):
        return None
    if recorded["fingerprint"] == dataset.fingerprint():
        return None
    then = recorded.get("n")
    note = (f"the recipe {path} was made on another version of {dataset.name!r} "
            f"({then if then is not None else '?'} samples then, {len(dataset)} now); its thresholds "
            "were applied to the dataset as it is now")
    log.warning(note)
    return note


def _encoder_spec(config):
    from clipcleaner_core.encoders import EncoderSpec

    return EncoderSpec(model=config.model, pretrained=config.pretrained,
                       device="cpu" if config.device == "cpu" else "auto")


def _embed(config, dataset, cache_root, progress, cancel=None):
    from clipcleaner_core.embed import embed_dataset

    return embed_dataset(dataset, _encoder_spec(config), cache_root=cache_root, progress=progress,
                         cancel=cancel)


def _inputs(dataset, features):
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != len(dataset):
            raise DataError(f"features have shape {features.shape}; expected ({len(dataset)}, D), "
                            f"one row per sample of {dataset.name!r}")
        return features
    if dataset.images is not None:
        return dataset.images
    return tuple(str(dataset.abspath(i)) for i in range(len(dataset)))


def _take(inputs, rows: np.ndarray):
    if isinstance(inputs, tuple):
        return tuple(inputs[i] for i in rows)
    return inputs[rows]


def _holdout(dataset, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from clipcleaner_core.data import holdout_split

    train_rows, test_rows = holdout_split(len(dataset), fraction=fraction, seed=HOLDOUT_SEED)
    return np.sort(np.asarray(train_rows)), np.sort(np.asarray(test_rows))


def _cifar_test(config, dataset, needs_features, cache_root):
    from clipcleaner_core.data import load_dataset

    test = load_dataset(dataset.spec or config.data, split="test")
    truth = test.true_labels if test.true_labels is not None else test.labels  # CIFAR test is clean
    if not needs_features:
        return _inputs(test, None), truth, TRUE_LABELS
    embedding = _embed(config, test, cache_root, None)
    valid = np.asarray(embedding.valid, dtype=bool)
    return np.asarray(embedding.image_features, dtype=np.float32)[valid], truth[valid], TRUE_LABELS
