"""The score table's schema, the registry of scores, and what a review decision means.

One place for what the core and every page read:

* :data:`SCORES`: each score's name, source family, columns, the threshold that applies and its
  display label (instead of string surgery on names and per-page label tables);
* :data:`TABLE_COLUMNS`: the DESIGN §6 columns, in order;
* :data:`DECISIONS` and :func:`decision_effects`: a review decision ``keep`` keeps the sample,
  ``drop`` drops it, ``relabel`` keeps it under ``final_label``; the latest decision per sample
  wins; no decision is ``""`` (never NaN);
* :func:`apply_decisions` and :func:`kept_mask`, both built on :func:`decision_effects`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError


@dataclass(frozen=True)
class Score:
    """One score of DESIGN §2 step 5.

    ``column`` holds the score itself; ``gate_column`` the value compared with ``threshold``
    (a loss score passes on its mixture's clean probability, a consistency score on itself).
    Every column is in [0, 1], higher = more likely the given label is correct.
    """

    name: str
    family: str
    kind: str
    column: str
    gate_column: str
    threshold: str
    label: str

    @property
    def flag(self) -> str:
        """The ``SelectionConfig`` switch of this score."""
        return f"use_{self.name}"


FAMILIES = {"zs": "zero-shot", "lr": "linear probe", "nb": "neighbours"}
#: the paper's families: their scores are on by default; the others are off unless asked for
PAPER_FAMILIES = ("zs", "lr")
SCORES: tuple[Score, ...] = (
    Score("zs_loss", "zs", "loss", "zs_loss_score", "zs_clean_prob", "theta_gmm", "zero-shot loss"),
    Score("zs_consistency", "zs", "consistency", "zs_consistency", "zs_consistency", "theta_cons",
          "zero-shot consistency"),
    Score("lr_loss", "lr", "loss", "lr_loss_score", "lr_clean_prob", "theta_gmm", "probe loss"),
    Score("lr_consistency", "lr", "consistency", "lr_consistency", "lr_consistency", "theta_cons",
          "probe consistency"),
    # beyond the paper (clipcleaner_core/neighbours.py): off by default and in the paper presets.
    # knn_agreement is the trusted kNN vote: neighbours count by similarity and by the trust in
    # their own labels (their paper scores, propagated over the graph). With neighbour scores on,
    # label_score adds the neighbours' evidence to the paper's scores of the sample: each paper
    # score counts once and the neighbour scores (the kNN vote, the LEMoN clean probability)
    # together count as one, since both read the same kNN graph (selection.label_score_weights).
    Score("knn_agreement", "nb", "consistency", "knn_agreement", "knn_agreement", "theta_knn",
          "kNN label agreement"),
    Score("lemon", "nb", "loss", "lemon_score", "lemon_clean_prob", "theta_gmm",
          "LEMoN neighbour distance"),
)
SCORE_NAMES = tuple(score.name for score in SCORES)
SCORES_BY_NAME = {score.name: score for score in SCORES}
SCORE_LABELS = {score.name: score.label for score in SCORES}
PAPER_SCORE_NAMES = tuple(score.name for score in SCORES if score.family in PAPER_FAMILIES)

DECISIONS = ("keep", "drop", "relabel")
NO_DECISION = ""
TABLE_COLUMNS = (
    "index", "path", "given_label", "suggested_label", "label_score", "is_label_issue",
    "is_clean", "zs_loss_score", "zs_consistency", "lr_loss_score", "lr_consistency",
    "knn_agreement", "lemon_score", "zs_clean_prob", "lr_clean_prob", "lemon_clean_prob",
    *("duplicate_group", "is_conflicting_duplicate", "outlier_score", "is_outlier"),
    *("duplicate_across_splits", "cross_split_match"),
    "review_decision", "final_label",
)
#: issue types beyond label noise (neighbours.py): -1 / False / NaN without neighbour evidence
ISSUE_COLUMNS = ("duplicate_group", "is_conflicting_duplicate", "outlier_score", "is_outlier")
#: a near-duplicate in the other split of the dataset (the test split of a training set), and the
#: other split's dataset index of that sample (-1 where none); False / -1 when unchecked
SPLIT_COLUMNS = ("duplicate_across_splits", "cross_split_match")
TRUTH_COLUMNS = ("true_label", "is_noisy")
#: review_decision is categorical: these are its categories, code 0 = no decision
DECISION_CATEGORIES = (NO_DECISION, *DECISIONS)


def score(name: str) -> Score:
    """The registry entry of ``name``; an unknown name lists the valid ones."""
    if name not in SCORES_BY_NAME:
        raise ConfigError(f"unknown score {name!r}; valid scores: {', '.join(SCORE_NAMES)}.")
    return SCORES_BY_NAME[name]


@dataclass(frozen=True)
class DecisionEffects:
    """Per table row: ``code`` (N,) int8 index into :data:`DECISION_CATEGORIES` (0 = none) and
    ``final_label`` (N,) int64 for rows relabelled (-1 elsewhere)."""

    code: np.ndarray
    final_label: np.ndarray

    @property
    def decided(self) -> np.ndarray:
        return self.code > 0

    def apply_to(self, is_clean: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(is_clean, final_label)`` after the decisions (new arrays)."""
        clean = is_clean.copy()
        clean[self.decided] = self.code[self.decided] != DECISION_CATEGORIES.index("drop")
        relabel = self.final_label >= 0
        final = labels.astype(np.int64, copy=True)
        final[relabel] = self.final_label[relabel]
        return clean, final

    def categorical(self) -> pd.Categorical:
        return pd.Categorical.from_codes(self.code, categories=list(DECISION_CATEGORIES))


def decision_effects(index: np.ndarray, decisions: pd.DataFrame | None) -> DecisionEffects:
    """What ``decisions`` (columns ``index``, ``decision``, ``final_label``; latest per index wins)
    do to the rows whose dataset index is ``index`` (N,). Decisions for indices not in ``index``
    are ignored. Vectorised: 100,000 decisions over 10^6 rows take milliseconds."""
    index = np.asarray(index, dtype=np.int64)
    code = np.zeros(index.size, dtype=np.int8)
    final = np.full(index.size, -1, dtype=np.int64)
    if decisions is None or len(decisions) == 0:
        return DecisionEffects(code, final)
    missing = {"index", "decision"} - set(decisions.columns)
    if missing:
        raise DataError(f"decisions lack columns {sorted(missing)}; need index, decision, final_label.")
    latest = decisions.drop_duplicates("index", keep="last")
    codes, uniques = pd.factorize(latest["decision"], use_na_sentinel=True)
    uniques = [str(u) for u in uniques]
    bad = sorted(set(uniques) - set(DECISIONS)) + (["missing"] if (codes < 0).any() else [])
    if bad:
        raise ConfigError(f"unknown decisions {bad}; valid decisions: {', '.join(DECISIONS)}.")
    decision_code = np.asarray([DECISION_CATEGORIES.index(u) for u in uniques], dtype=np.int8)[codes]
    ids = latest["index"].to_numpy(dtype=np.int64)
    if index.size == 0:
        return DecisionEffects(code, final)
    # the table's index is sorted in practice (dataset order): search it directly, else via a sort
    order = None if bool(np.all(index[1:] >= index[:-1])) else np.argsort(index, kind="stable")
    haystack = index if order is None else index[order]
    slots = np.minimum(np.searchsorted(haystack, ids), index.size - 1)
    hit = haystack[slots] == ids
    rows = slots[hit] if order is None else order[slots[hit]]
    chosen = decision_code[hit]
    code[rows] = chosen
    relabel = chosen == DECISION_CATEGORIES.index("relabel")
    if relabel.any():
        labels = latest["final_label"].to_numpy()[hit][relabel] if "final_label" in latest else None
        if labels is None or pd.isna(labels).any():
            raise DataError("a relabel decision needs a final_label; pass the new class index.")
        final[rows[relabel]] = labels.astype(np.int64)
    return DecisionEffects(code, final)


def apply_decisions(table: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.DataFrame:
    """A copy of the score ``table`` with review ``decisions`` folded in (see the module doc):
    ``review_decision``, ``is_clean``, ``is_label_issue = not is_clean`` and ``final_label``."""
    effects = decision_effects(table["index"].to_numpy(), decisions)
    out = table.copy()
    if not effects.decided.any():
        return out
    clean, final = effects.apply_to(out["is_clean"].to_numpy(dtype=bool),
                                    out["final_label"].to_numpy(dtype=np.int64))
    earlier = pd.Categorical(out["review_decision"].astype(object).fillna(NO_DECISION).astype(str),
                             categories=list(DECISION_CATEGORIES)).codes.astype(np.int8) \
        if "review_decision" in out.columns else np.zeros(len(out), dtype=np.int8)
    codes = np.where(effects.decided, effects.code, np.maximum(earlier, 0)).astype(np.int8)
    out["review_decision"] = pd.Categorical.from_codes(codes, categories=list(DECISION_CATEGORIES))
    out["is_clean"] = clean
    out["is_label_issue"] = ~clean
    out["final_label"] = final
    return out


def kept_mask(table: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the samples an export keeps: ``is_clean``, overridden by a review decision
    (keep / relabel keep, drop drops) where the table records one."""
    if "is_clean" not in table.columns:
        raise DataError("the table lacks the is_clean column; give a score table written by select or run.")
    keep = table["is_clean"].to_numpy(dtype=bool).copy()
    if "review_decision" in table.columns:
        decision = table["review_decision"].astype(object).fillna(NO_DECISION).astype(str).to_numpy()
        keep[np.isin(decision, ("keep", "relabel"))] = True
        keep[decision == "drop"] = False
    return keep
