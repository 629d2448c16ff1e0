"""How good is a selection: clean-set precision / recall / F1, AUROC, per-class table.

All functions take plain numpy arrays. "Clean" means *the given label is correct*
(``given == true``); a selection keeps the samples in ``clean_mask`` and flags the rest.
The estimated noise rate (the fraction of samples flagged) needs no ground truth and is always
reported; everything else needs the true labels and is NaN without them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .errors import DataError

PER_CLASS_COLUMNS = ("class", "n", "kept", "flagged", "precision", "recall", "noise_rate_true")


def selection_metrics(
    clean_mask: np.ndarray,
    given: np.ndarray,
    true: np.ndarray | None = None,
    label_score: np.ndarray | None = None,
) -> dict:
    """Summarise a selection.

    Parameters
    ----------
    clean_mask
        (N,) bool, True = kept as clean.
    given
        (N,) int, the given (possibly wrong) labels.
    true
        (N,) int ground-truth labels, or None.
    label_score
        (N,) float in [0, 1], higher = more likely correct; used for the AUROC.

    Returns
    -------
    dict with ``n``, ``kept``, ``flagged`` and ``estimated_noise_rate`` (= flagged / n, the
    share of samples the selection believes are mislabelled; no ground truth needed) always;
    with ``true``: ``true_noise_rate`` (share with given != true), ``precision`` (share of
    kept samples whose given label is correct), ``recall`` (share of correctly labelled
    samples that are kept), ``f1`` and ``auroc`` (area under the ROC curve of
    ``1 - label_score`` for finding wrong labels; NaN when only one kind of sample exists or
    no score is given). Undefined ratios (0 / 0) are NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.metrics import selection_metrics
    >>> given, true = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # sample 1 is mislabelled
    >>> kept = np.array([True, False, True, True])
    >>> m = selection_metrics(kept, given, true)
    >>> m["kept"], m["precision"], m["recall"]
    (3, 1.0, 1.0)
    """
    clean_mask, given, true = _validate(clean_mask, given, true)
    n = int(clean_mask.size)
    kept = int(clean_mask.sum())
    out = {
        "n": n,
        "kept": kept,
        "flagged": n - kept,
        "estimated_noise_rate": _ratio(n - kept, n),
    }
    if true is None:
        return out
    correct = given == true
    precision, recall, f1 = _precision_recall_f1(clean_mask, correct)
    out.update(
        true_noise_rate=_ratio(int((~correct).sum()), n),
        precision=precision,
        recall=recall,
        f1=f1,
        auroc=_auroc(~correct, label_score),
    )
    return out


def per_class_table(
    clean_mask: np.ndarray,
    given: np.ndarray,
    true: np.ndarray | None = None,
    *,
    num_classes: int | None = None,
) -> pd.DataFrame:
    """One row per given class: columns ``class, n, kept, flagged, precision, recall,
    noise_rate_true``.

    ``n`` counts samples whose *given* label is the class; ``precision`` / ``recall`` are those of
    :func:`selection_metrics` restricted to the class; ``noise_rate_true`` is the share of the
    class's samples whose given label is wrong. The last three are NaN without ``true``.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.metrics import per_class_table
    >>> given, true = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    >>> table = per_class_table(np.array([True, False, True, True]), given, true)
    >>> table[["class", "n", "kept", "flagged"]].values.tolist()
    [[0, 2, 1, 1], [1, 2, 2, 0]]
    """
    clean_mask, given, true = _validate(clean_mask, given, true)
    k = int(num_classes if num_classes is not None else (given.max() + 1 if given.size else 0))
    n = np.bincount(given, minlength=k)[:k]
    kept = np.bincount(given, weights=clean_mask, minlength=k)[:k].astype(int)
    table = pd.DataFrame({"class": np.arange(k), "n": n, "kept": kept, "flagged": n - kept})
    nan = np.full(k, np.nan)
    precision, recall, noise = nan.copy(), nan.copy(), nan.copy()
    if true is not None:
        correct = given == true
        correct_n = np.bincount(given, weights=correct, minlength=k)[:k]
        kept_correct = np.bincount(given, weights=correct & clean_mask, minlength=k)[:k]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = kept_correct / kept
            recall = kept_correct / correct_n
            noise = (n - correct_n) / n
    table["precision"], table["recall"], table["noise_rate_true"] = precision, recall, noise
    return table[list(PER_CLASS_COLUMNS)]


def _validate(clean_mask, given, true):
    clean_mask = np.asarray(clean_mask, dtype=bool).ravel()
    given = np.asarray(given).ravel().astype(np.int64)
    if given.shape != clean_mask.shape:
        raise DataError(
            f"clean_mask has {clean_mask.size} entries but given has {given.size}; pass one "
            "entry per sample in both."
        )
    if given.size and given.min() < 0:
        raise DataError("given labels must be class indices >= 0; map class names to indices first.")
    if true is not None:
        true = np.asarray(true).ravel().astype(np.int64)
        if true.shape != given.shape:
            raise DataError(
                f"true has {true.size} entries but given has {given.size}; pass one true label "
                "per sample or None."
            )
    return clean_mask, given, true


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _precision_recall_f1(clean_mask: np.ndarray, correct: np.ndarray) -> tuple[float, float, float]:
    true_pos = int((clean_mask & correct).sum())
    precision = _ratio(true_pos, int(clean_mask.sum()))
    recall = _ratio(true_pos, int(correct.sum()))
    if np.isnan(precision) or np.isnan(recall) or precision + recall == 0:
        f1 = float("nan") if np.isnan(precision) or np.isnan(recall) else 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def label_issue_auroc(given: np.ndarray, true: np.ndarray, label_score: np.ndarray | None) -> float:
    """AUROC of ``1 - label_score`` for finding samples whose given label is wrong; NaN when only
    one kind of sample exists or no score is given.

    Examples
    --------
    >>> import numpy as np
    >>> from clipcleaner_core.metrics import label_issue_auroc
    >>> given, true = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    >>> label_issue_auroc(given, true, np.array([0.9, 0.1, 0.8, 0.7]))  # the wrong one scores lowest
    1.0
    """
    _, given, true = _validate(np.ones(np.asarray(given).size, dtype=bool), given, true)
    return _auroc(given != true, label_score)


def _auroc(is_wrong: np.ndarray, label_score: np.ndarray | None) -> float:
    if label_score is None:
        return float("nan")
    score = np.asarray(label_score, dtype=np.float64).ravel()
    if score.shape != is_wrong.shape:
        raise DataError(
            f"label_score has {score.size} entries but there are {is_wrong.size} samples."
        )
    finite = np.isfinite(score)
    wrong = is_wrong[finite]
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, 1.0 - score[finite]))


def make_synthetic_problem(
    n: int = 2000,
    num_classes: int = 10,
    dim: int = 64,
    *,
    noise_rate: float = 0.4,
    spread: float = 1.0,
    prompts_per_class: int = 3,
    seed: int = 0,
) -> dict:
    """A seeded toy problem for tests and benchmarks: class-clustered L2-normalised features.

    Class centres are random unit vectors; a sample is its class centre plus isotropic Gaussian
    noise of total norm about ``spread``, re-normalised. Text features are the centres plus a
    little noise (``prompts_per_class`` prompts per class). A ``noise_rate`` share of samples get
    a label drawn uniformly from all classes (symmetric noise; it may equal the true one).

    Returns
    -------
    dict with ``features`` (n, dim) float32, ``labels`` (given, n,) int64, ``true_labels``,
    ``text_features`` (num_classes * prompts_per_class, dim) float32, ``text_labels``.

    Examples
    --------
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(100, 4, 8, noise_rate=0.2, seed=0)
    >>> p["features"].shape, p["text_features"].shape, int((p["labels"] != p["true_labels"]).sum())
    ((100, 8), (12, 8), 13)
    """
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((num_classes, dim)))
    true = rng.integers(0, num_classes, n)
    noise = rng.standard_normal((n, dim)) * (spread / np.sqrt(dim))
    features = _unit(centres[true] + noise).astype(np.float32)
    labels = true.copy()
    flip = rng.random(n) < noise_rate
    labels[flip] = rng.integers(0, num_classes, int(flip.sum()))
    text_labels = np.repeat(np.arange(num_classes), prompts_per_class)
    text_noise = rng.standard_normal((text_labels.size, dim)) * (0.3 / np.sqrt(dim))
    text = _unit(centres[text_labels] + text_noise).astype(np.float32)
    return {
        "features": features,
        "labels": labels.astype(np.int64),
        "true_labels": true.astype(np.int64),
        "text_features": text,
        "text_labels": text_labels.astype(np.int64),
    }


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)
