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
from .schema import (  # noqa: F401  (re-exported: the schema's names as selection has always had them)
    DECISIONS, SCORE_NAMES, SCORES, SCORES_BY_NAME, TABLE_COLUMNS, DecisionEffects,
    apply_decisions, decision_effects,
)
from .neighbours import Duplicates, SplitMatches, find_duplicates
from .presets import PRESETS, TRAIN_PRESETS  # noqa: F401  re-exported; the one table is presets.py
from .schema import ISSUE_COLUMNS, SPLIT_COLUMNS
from .scoring import ScoreFit


#: how the enabled scores' passes decide: "all" (DESIGN §2 step 8) or "majority" (half or more)
COMBINE_RULES = ("all", "majority")


@dataclass(frozen=True)
class SelectionConfig:
    """Thresholds (DESIGN §2 step 7) and which scores take part (step 8). ``refill`` turns the
    empty-class refill of step 9 on or off.

    Beyond the paper (off by default, so the default is the paper's rule exactly): the neighbour
    scores ``use_knn_agreement`` (passes when ``knn_agreement >= theta_knn``) and ``use_lemon``
    (passes when its clean probability >= ``theta_gmm``); ``combine`` how the passes of the
    enabled scores make the decision: ``"all"`` (the paper: a sample must pass every score) or
    ``"majority"`` (it must pass at least half of them). ``duplicate_threshold`` (cosine) and
    ``outlier_z`` (robust z) only flag near-duplicates and outliers; they never change
    ``is_clean``."""

    theta_gmm: float = 0.5
    theta_cons: float = 0.8
    use_zs_loss: bool = True
    use_zs_consistency: bool = True
    use_lr_loss: bool = True
    use_lr_consistency: bool = True
    refill: bool = True
    theta_knn: float = 0.5
    use_knn_agreement: bool = False
    use_lemon: bool = False
    combine: str = "all"
    duplicate_threshold: float = 0.98
    outlier_z: float = 3.5

    def __post_init__(self):
        for name in ("theta_gmm", "theta_cons", "theta_knn"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value!r} must lie in [0, 1].")
        if not -1.0 <= self.duplicate_threshold <= 1.0:
            raise ConfigError(f"duplicate_threshold={self.duplicate_threshold!r} must lie in "
                              "[-1, 1] (a cosine similarity; default 0.98).")
        if not self.outlier_z > 0:
            raise ConfigError(f"outlier_z={self.outlier_z!r} must be > 0 (default 3.5).")
        if self.combine not in COMBINE_RULES:
            raise ConfigError(f"unknown combine rule {self.combine!r}; valid rules: "
                              f"{', '.join(COMBINE_RULES)}.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SelectionConfig":
        """The paper's thresholds for dataset ``name`` (a key of ``PRESETS``)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def requested(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in SCORES if getattr(self, entry.flag))


@dataclass(frozen=True, eq=False)
class Selection:
    """Result of :func:`select`. All arrays have length N.

    - ``clean_mask``: bool, True = kept as clean (after refill).
    - ``label_score``: float in [0, 1], higher = more likely correct: the mean over the enabled
      scores of the clean probability (loss scores) or the consistency (consistency scores); the
      neighbour scores count together as one score (:func:`label_score_weights`).
    - ``suggested_label``: int, argmax of the mean of the enabled probability matrices.
    - ``refilled``: bool, True for samples added by the empty-class refill.
    - ``flagged_by``: score name -> bool array, True where the sample fails that score.
    - ``enabled``: the score names that took part (requested and available in the fit).
    - ``duplicates``: near-duplicate groups at ``config.duplicate_threshold`` and
      ``is_outlier`` (bool) at ``config.outlier_z``; None when the fit has no neighbour evidence.
    """

    clean_mask: np.ndarray
    label_score: np.ndarray
    suggested_label: np.ndarray
    refilled: np.ndarray
    flagged_by: dict
    enabled: tuple
    config: SelectionConfig
    duplicates: Duplicates | None = None
    is_outlier: np.ndarray | None = None


def available_scores(fit: ScoreFit) -> tuple[str, ...]:
    """Score names the fit can provide (zero-shot ones need text features, probe ones a probe,
    neighbour ones the neighbour evidence; LEMoN also text features).

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.scoring import ScoringConfig, fit_scores
    >>> from clipcleaner_core.selection import available_scores
    >>> p = make_synthetic_problem(100, 2, 8, seed=0)
    >>> available_scores(fit_scores(p["features"], p["labels"], num_classes=2,
    ...                             config=ScoringConfig(zeroshot=False)))  # no text: no zero-shot
    ('lr_loss', 'lr_consistency', 'knn_agreement')
    """
    return tuple(entry.name for entry in SCORES if getattr(fit, entry.column) is not None)


def select(fit: ScoreFit, config: SelectionConfig = SelectionConfig()) -> Selection:
    """Select the clean samples of ``fit`` under ``config`` (DESIGN §2 steps 7–10).

    Requested scores the fit lacks (e.g. zero-shot without a text tower) are skipped. The
    empty-class refill gives a class that has samples but none selected its n best samples by
    zero-shot loss score (the probe's when zero-shot is off), n = max(smallest non-zero selected
    class count, floor(N / K^2)), at least 1 and at most the class size. Note: the official code
    sorts ascending and so refills with the *least* clean samples; we take the most clean ones.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.scoring import fit_scores
    >>> from clipcleaner_core.selection import SelectionConfig, select
    >>> p = make_synthetic_problem(300, 3, 16, noise_rate=0.3, seed=0)
    >>> fit = fit_scores(p["features"], p["labels"], num_classes=3, text_features=p["text_features"],
    ...                  text_labels=p["text_labels"])
    >>> strict, loose = select(fit, SelectionConfig(theta_cons=0.95)), select(fit, SelectionConfig(theta_cons=0.5))
    >>> bool(strict.clean_mask.sum() <= loose.clean_mask.sum())  # a higher threshold keeps fewer
    True
    >>> strict.enabled
    ('zs_loss', 'zs_consistency', 'lr_loss', 'lr_consistency')
    """
    enabled = tuple(name for name in config.requested() if name in available_scores(fit))
    if not enabled:
        raise ConfigError(
            f"no score enabled: requested {list(config.requested())}, the fit provides "
            f"{list(available_scores(fit))}; enable at least one available score."
        )
    return _compute_selection(fit, config, enabled)


def label_score_weights(enabled: tuple) -> dict:
    """Each enabled score's weight in ``label_score``: 1 for each of the paper's scores, and
    1 / (enabled neighbour scores) for each neighbour score, so that the neighbour family counts
    as one score.

    The kNN vote and the LEMoN-style score both read the same kNN graph (LEMoN's neighbour term is
    a text-weighted kNN vote), so counting them as two independent scores would count the graph
    twice. With the paper's scores alone every weight is 1 and ``label_score`` is their plain mean.

    Examples
    --------
    >>> from clipcleaner_core.selection import label_score_weights
    >>> label_score_weights(("lr_loss", "lr_consistency"))
    {'lr_loss': 1.0, 'lr_consistency': 1.0}
    >>> label_score_weights(("lr_loss", "lr_consistency", "knn_agreement", "lemon"))
    {'lr_loss': 1.0, 'lr_consistency': 1.0, 'knn_agreement': 0.5, 'lemon': 0.5}
    """
    neighbour = [name for name in enabled if SCORES_BY_NAME[name].family == "nb"]
    return {name: 1.0 / len(neighbour) if name in neighbour else 1.0 for name in enabled}


def _score_values(fit: ScoreFit, name: str) -> np.ndarray:
    return getattr(fit, SCORES_BY_NAME[name].gate_column)


def _compute_selection(fit: ScoreFit, config: SelectionConfig, enabled: tuple) -> Selection:
    n = len(fit)
    flagged_by = {}
    failed = np.zeros(n, dtype=np.int32)
    score_sum = np.zeros(n)
    weights = label_score_weights(enabled)
    for name in enabled:
        values = _score_values(fit, name)
        theta = getattr(config, SCORES_BY_NAME[name].threshold)
        flagged_by[name] = values < theta
        failed += flagged_by[name]
        score_sum += weights[name] * values
    # "all": no score failed (step 8); "majority": at most half of them failed
    clean = failed == 0 if config.combine == "all" else 2 * failed <= len(enabled)
    refilled = np.zeros(n, dtype=bool)
    if config.refill:
        refilled = _refill(fit, clean, enabled)
        clean |= refilled
    duplicates = is_outlier = None
    if fit.has_neighbours:
        duplicates = find_duplicates(fit.knn, fit.labels, threshold=config.duplicate_threshold)
        is_outlier = fit.outlier_z > config.outlier_z
    return Selection(
        clean_mask=clean,
        label_score=score_sum / sum(weights.values()),
        suggested_label=_suggest(fit, enabled),
        refilled=refilled,
        flagged_by=flagged_by,
        enabled=enabled,
        config=config,
        duplicates=duplicates,
        is_outlier=is_outlier,
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
    members = np.flatnonzero(np.isin(labels, empty))
    # per emptied class, its members best first: sort by (class, -ranking), keep the first n_fill
    order = members[np.lexsort((-ranking[members], labels[members]))]
    classes = labels[order]
    rank_in_class = np.arange(order.size) - np.searchsorted(classes, classes, side="left")
    refilled[order[rank_in_class < n_fill]] = True
    return refilled


def _suggest(fit: ScoreFit, enabled: tuple) -> np.ndarray:
    zeroshot = any(name.startswith("zs") for name in enabled)
    probe = any(name.startswith("lr") for name in enabled)
    if not (zeroshot or probe):  # only neighbour scores: suggest from every source the fit has
        zeroshot, probe = fit.has_zeroshot, fit.has_probe
    return fit.suggested_label(zeroshot=zeroshot, probe=probe)


def score_table(
    fit: ScoreFit,
    selection: Selection,
    *,
    index: np.ndarray | None = None,
    paths=None,
    true_labels: np.ndarray | None = None,
    decisions: pd.DataFrame | None = None,
    effects: DecisionEffects | None = None,
    split_matches: SplitMatches | None = None,
) -> pd.DataFrame:
    """The DESIGN §6 score table, one row per sample, columns exactly ``TABLE_COLUMNS``
    (+ ``true_label, is_noisy`` when ``true_labels`` is given).

    ``index`` (N,) dataset indices (default 0..N-1); ``paths`` (N,) strings (default ""), or a
    ready pandas string array (reused without conversion: the app builds it once per dataset).
    Scores disabled in the selection or missing from the fit are NaN columns. ``review_decision``
    is categorical ("" = none); ``split_matches`` (each sample's nearest sample in the other
    split, :func:`clipcleaner_core.neighbours.match_across_splits`) fills ``duplicate_across_splits``
    at ``duplicate_threshold``. ``decisions`` are folded in as :mod:`clipcleaner_core.schema`
    defines (or ``effects``, their already computed :class:`~clipcleaner_core.schema.DecisionEffects`
    on these rows); built column by column in numpy, so a 10^6-row table takes a fraction of a
    second.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> from clipcleaner_core.scoring import fit_scores
    >>> from clipcleaner_core.selection import TABLE_COLUMNS, score_table, select
    >>> p = make_synthetic_problem(200, 2, 8, seed=0)
    >>> fit = fit_scores(p["features"], p["labels"], num_classes=2, text_features=p["text_features"],
    ...                  text_labels=p["text_labels"])
    >>> table = score_table(fit, select(fit), true_labels=p["true_labels"])
    >>> list(table.columns) == list(TABLE_COLUMNS) + ["true_label", "is_noisy"]
    True
    >>> bool((table["is_label_issue"] == ~table["is_clean"]).all())
    True
    """
    n = len(fit)
    index = np.arange(n) if index is None else np.asarray(index).astype(np.int64)
    if paths is None:
        paths = np.full(n, "", dtype=object)
    elif not isinstance(paths, pd.api.extensions.ExtensionArray):
        paths = np.asarray(paths, dtype=object)
    if index.size != n or len(paths) != n:
        raise DataError(f"index and paths need {n} entries (one per sample).")
    if effects is None:
        effects = decision_effects(index, decisions)
    is_clean, final_label = effects.apply_to(selection.clean_mask, fit.labels)
    columns = {
        "index": index,
        "path": paths,
        "given_label": fit.labels,
        "suggested_label": selection.suggested_label,
        "label_score": selection.label_score,
        "is_label_issue": ~is_clean,
        "is_clean": is_clean,
    }
    for entry in SCORES:
        columns[entry.column] = _column_or_nan(getattr(fit, entry.column), entry.name in selection.enabled, n)
    for entry in SCORES:
        if entry.kind == "loss":
            columns[entry.gate_column] = _column_or_nan(getattr(fit, entry.gate_column),
                                                        entry.name in selection.enabled, n)
    columns.update(_issue_columns(fit, selection, n))
    columns.update(_split_columns(split_matches, selection.config.duplicate_threshold, n))
    columns["review_decision"] = effects.categorical()
    columns["final_label"] = final_label
    if true_labels is not None:
        true_labels = np.asarray(true_labels).astype(np.int64)
        if true_labels.size != n:
            raise DataError(f"true_labels has {true_labels.size} entries, expected {n}.")
        columns["true_label"] = true_labels
        columns["is_noisy"] = true_labels != fit.labels
    return pd.DataFrame(columns, copy=False)


def _issue_columns(fit: ScoreFit, selection: Selection, n: int) -> dict:
    """Near-duplicate and outlier columns (ISSUE_COLUMNS); -1 / False / NaN without evidence."""
    dup = selection.duplicates
    outlier_score = fit.outlier_score
    return dict(zip(ISSUE_COLUMNS, (
        dup.group if dup is not None else np.full(n, -1, dtype=np.int64),
        dup.conflicting if dup is not None else np.zeros(n, dtype=bool),
        outlier_score if outlier_score is not None else np.full(n, np.nan),
        selection.is_outlier if selection.is_outlier is not None else np.zeros(n, dtype=bool),
    )))


def _split_columns(matches: SplitMatches | None, threshold: float, n: int) -> dict:
    """``duplicate_across_splits`` and ``cross_split_match`` (SPLIT_COLUMNS); False / -1 unchecked."""
    if matches is None:
        return dict(zip(SPLIT_COLUMNS, (np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64))))
    if matches.index.size != n:
        raise DataError(f"the matches across splits have {matches.index.size} rows, expected {n}.")
    across = matches.duplicates(threshold)
    return dict(zip(SPLIT_COLUMNS, (across, np.where(across, matches.index, -1))))


def _column_or_nan(values, enabled: bool, n: int) -> np.ndarray:
    if values is None or not enabled:
        return np.full(n, np.nan)
    return np.asarray(values, dtype=np.float64)
