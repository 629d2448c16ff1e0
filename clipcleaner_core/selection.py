"""Apply thresholds to a fitted ``ScoreFit``: DESIGN §2 steps 7–10, in milliseconds.

``select(fit, SelectionConfig(...))`` only compares cached arrays with thresholds, intersects
the enabled scores, refills emptied classes and takes an argmax, so moving a slider never refits
anything. ``score_table`` turns the result into the DESIGN §6 table; ``apply_decisions`` folds
manual review decisions (keep / drop / relabel) into that table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .presets import PRESETS, TRAIN_PRESETS  # noqa: F401  re-exported; the one table is presets.py
from .scoring import ScoreFit

SCORE_NAMES = ("zs_loss", "zs_consistency", "lr_loss", "lr_consistency")
DECISIONS = ("keep", "drop", "relabel")
TABLE_COLUMNS = (
    "index", "path", "given_label", "suggested_label", "label_score", "is_label_issue",
    "is_clean", "zs_loss_score", "zs_consistency", "lr_loss_score", "lr_consistency",
    "zs_clean_prob", "lr_clean_prob", "review_decision", "final_label",
)

@dataclass(frozen=True)
class SelectionConfig:
    """Thresholds (DESIGN §2 step 7) and which scores take part (step 8). ``refill`` turns the
    empty-class refill of step 9 on or off."""

    theta_gmm: float = 0.5
    theta_cons: float = 0.8
    use_zs_loss: bool = True
    use_zs_consistency: bool = True
    use_lr_loss: bool = True
    use_lr_consistency: bool = True
    refill: bool = True

    def __post_init__(self):
        for name in ("theta_gmm", "theta_cons"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value!r} must lie in [0, 1].")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SelectionConfig":
        """The paper's thresholds for dataset ``name`` (a key of ``PRESETS``)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def requested(self) -> tuple[str, ...]:
        flags = (self.use_zs_loss, self.use_zs_consistency, self.use_lr_loss,
                 self.use_lr_consistency)
        return tuple(name for name, on in zip(SCORE_NAMES, flags) if on)


@dataclass(frozen=True, eq=False)
class Selection:
    """Result of :func:`select`. All arrays have length N.

    - ``clean_mask``: bool, True = kept as clean (after refill).
    - ``label_score``: float in [0, 1], higher = more likely correct: the mean over the enabled
      scores of the clean probability (loss scores) or the consistency (consistency scores).
    - ``suggested_label``: int, argmax of the mean of the enabled probability matrices.
    - ``refilled``: bool, True for samples added by the empty-class refill.
    - ``flagged_by``: score name -> bool array, True where the sample fails that score.
    - ``enabled``: the score names that took part (requested and available in the fit).
    """

    clean_mask: np.ndarray
    label_score: np.ndarray
    suggested_label: np.ndarray
    refilled: np.ndarray
    flagged_by: dict
    enabled: tuple
    config: SelectionConfig


def available_scores(fit: ScoreFit) -> tuple[str, ...]:
    """Score names the fit can provide (zero-shot ones need text features, probe ones a probe)."""
    return tuple(
        name for name in SCORE_NAMES
        if (fit.has_zeroshot if name.startswith("zs") else fit.has_probe)
    )


def select(fit: ScoreFit, config: SelectionConfig = SelectionConfig()) -> Selection:
    """Select the clean samples of ``fit`` under ``config`` (DESIGN §2 steps 7–10).

    Requested scores the fit lacks (e.g. zero-shot without a text tower) are skipped. The
    empty-class refill gives a class that has samples but none selected its n best samples by
    zero-shot loss score (the probe's when zero-shot is off), n = max(smallest non-zero selected
    class count, floor(N / K^2)), at least 1 and at most the class size. Note: the official code
    sorts ascending and so refills with the *least* clean samples; we take the most clean ones.
    """
    enabled = tuple(name for name in config.requested() if name in available_scores(fit))
    if not enabled:
        raise ConfigError(
            f"no score enabled: requested {list(config.requested())}, the fit provides "
            f"{list(available_scores(fit))}; enable at least one available score."
        )
    return _compute_selection(fit, config, enabled)


def _score_values(fit: ScoreFit, name: str) -> np.ndarray:
    prefix, kind = name.split("_", 1)
    return getattr(fit, f"{prefix}_clean_prob" if kind == "loss" else f"{prefix}_consistency")


def _compute_selection(fit: ScoreFit, config: SelectionConfig, enabled: tuple) -> Selection:
    n = len(fit)
    flagged_by = {}
    clean = np.ones(n, dtype=bool)
    score_sum = np.zeros(n)
    for name in enabled:
        values = _score_values(fit, name)
        theta = config.theta_gmm if name.endswith("_loss") else config.theta_cons
        flagged_by[name] = values < theta
        clean &= ~flagged_by[name]
        score_sum += values
    refilled = np.zeros(n, dtype=bool)
    if config.refill:
        refilled = _refill(fit, clean, enabled)
        clean |= refilled
    return Selection(
        clean_mask=clean,
        label_score=score_sum / len(enabled),
        suggested_label=_suggest(fit, enabled),
        refilled=refilled,
        flagged_by=flagged_by,
        enabled=enabled,
        config=config,
    )


def _refill(fit: ScoreFit, clean: np.ndarray, enabled: tuple) -> np.ndarray:
    labels, k = fit.labels, fit.num_classes
    counts = np.bincount(labels, minlength=k)
    kept = np.bincount(labels[clean], minlength=k)
    empty = np.flatnonzero((counts > 0) & (kept == 0))
    refilled = np.zeros(labels.size, dtype=bool)
    if empty.size == 0:
        return refilled
    use_zs = fit.has_zeroshot and any(name.startswith("zs") for name in enabled)
    ranking = fit.zs_loss_score if use_zs or not fit.has_probe else fit.lr_loss_score
    non_zero = kept[kept > 0]
    n_fill = max(int(non_zero.min()) if non_zero.size else 0, labels.size // (k * k), 1)
    for cls in empty:
        members = np.flatnonzero(labels == cls)
        best = members[np.argsort(-ranking[members], kind="stable")[:n_fill]]
        refilled[best] = True
    return refilled


def _suggest(fit: ScoreFit, enabled: tuple) -> np.ndarray:
    return fit.suggested_label(
        zeroshot=any(name.startswith("zs") for name in enabled),
        probe=any(name.startswith("lr") for name in enabled),
    )


def score_table(
    fit: ScoreFit,
    selection: Selection,
    *,
    index: np.ndarray | None = None,
    paths=None,
    true_labels: np.ndarray | None = None,
    decisions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The DESIGN §6 score table, one row per sample, columns exactly ``TABLE_COLUMNS``
    (+ ``true_label, is_noisy`` when ``true_labels`` is given).

    ``index`` (N,) dataset indices (default 0..N-1); ``paths`` (N,) strings (default "").
    Scores disabled in the selection or missing from the fit are NaN columns. Without decisions
    ``review_decision`` is "" and ``final_label`` the given label; see :func:`apply_decisions`.
    """
    n = len(fit)
    index = np.arange(n) if index is None else np.asarray(index).astype(np.int64)
    paths = np.full(n, "", dtype=object) if paths is None else np.asarray(paths, dtype=object)
    if index.size != n or paths.size != n:
        raise DataError(f"index and paths need {n} entries (one per sample).")
    columns = {
        "index": index,
        "path": paths,
        "given_label": fit.labels,
        "suggested_label": selection.suggested_label,
        "label_score": selection.label_score,
        "is_label_issue": ~selection.clean_mask,
        "is_clean": selection.clean_mask.copy(),
    }
    for column, name in (("zs_loss_score", "zs_loss"), ("zs_consistency", "zs_consistency"),
                         ("lr_loss_score", "lr_loss"), ("lr_consistency", "lr_consistency")):
        columns[column] = _column_or_nan(getattr(fit, column), name in selection.enabled, n)
    for column, name in (("zs_clean_prob", "zs_loss"), ("lr_clean_prob", "lr_loss")):
        columns[column] = _column_or_nan(getattr(fit, column), name in selection.enabled, n)
    columns["review_decision"] = np.full(n, "", dtype=object)
    columns["final_label"] = fit.labels.copy()
    table = pd.DataFrame(columns)
    if true_labels is not None:
        true_labels = np.asarray(true_labels).astype(np.int64)
        if true_labels.size != n:
            raise DataError(f"true_labels has {true_labels.size} entries, expected {n}.")
        table["true_label"] = true_labels
        table["is_noisy"] = true_labels != fit.labels
    if decisions is not None:
        table = apply_decisions(table, decisions)
    return table


def _column_or_nan(values, enabled: bool, n: int) -> np.ndarray:
    if values is None or not enabled:
        return np.full(n, np.nan)
    return np.asarray(values, dtype=np.float64)


def apply_decisions(table: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.DataFrame:
    """Fold review decisions into a score table (returns a copy).

    ``decisions`` has columns ``index`` (dataset index, matched to the table's ``index``),
    ``decision`` in {keep, drop, relabel} and ``final_label`` (needed for relabel). Effects:
    keep -> ``is_clean`` True; drop -> ``is_clean`` False; relabel -> ``final_label`` = the new
    label and ``is_clean`` True (kept, with the corrected label). ``is_label_issue`` stays
    ``not is_clean``; ``review_decision`` holds the decision ("" for none). Rows whose index is
    not in the table are ignored.
    """
    out = table.copy()
    if decisions is None or len(decisions) == 0:
        return out
    missing = {"index", "decision"} - set(decisions.columns)
    if missing:
        raise DataError(f"decisions lack columns {sorted(missing)}; need index, decision, final_label.")
    bad = sorted(set(decisions["decision"]) - set(DECISIONS))
    if bad:
        raise ConfigError(f"unknown decisions {bad}; valid decisions: {', '.join(DECISIONS)}.")
    latest = decisions.drop_duplicates("index", keep="last").set_index("index")
    rows = out["index"].isin(latest.index).to_numpy(dtype=bool)
    chosen = latest.loc[out.loc[rows, "index"]]
    decision = chosen["decision"].to_numpy()
    out.loc[rows, "review_decision"] = decision
    out.loc[rows, "is_clean"] = decision != "drop"
    relabel = decision == "relabel"
    if relabel.any():
        labels = chosen["final_label"].to_numpy()[relabel] if "final_label" in chosen else None
        if labels is None or pd.isna(labels).any():
            raise DataError("a relabel decision needs a final_label; pass the new class index.")
        positions = np.flatnonzero(rows)[relabel]
        out.loc[out.index[positions], "final_label"] = labels.astype(np.int64)
    out["is_label_issue"] = ~out["is_clean"].astype(bool)
    return out
