"""Input checks for the numeric boundary: labels, feature matrices and probability matrices.

Each public function of the core that takes arrays calls these once and then trusts its inputs
(cleanlab's ``internal/validation.py`` is the model). Every check raises :class:`DataError` with one
message naming the input, the offending rows (the first few, and how many in all) and the fix.

Label rules (the same as for manifests, see the README's "Labels" section): integer class ids; a
float array is accepted when every value is a whole number (``1.0`` is class 1); strings are
accepted when every one spells an integer (``"1"``, ``" 01"``, ``"1.0"``); NaN, None, empty strings,
non-integer numbers (0.5), booleans and class names are refused, naming the rows.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .errors import DataError

SHOWN_ROWS = 5
"""How many offending rows an error message lists before "... (N in all)"."""


def describe_rows(rows: Sequence[int], *, what: str = "row", values: Sequence | None = None) -> str:
    """'rows 3, 7 and 9' or 'rows 3 (nan), 7 (nan), ... (12 in all)' for an error message."""
    rows = [int(r) for r in rows]
    shown = rows[:SHOWN_ROWS]
    parts = [str(r) if values is None else f"{r} ({_plain(values[i])!r})" for i, r in enumerate(shown)]
    text = ", ".join(parts)
    if len(rows) > SHOWN_ROWS:
        text += f", ... ({len(rows)} in all)"
    return f"{what}{'s' if len(rows) > 1 else ''} {text}"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def integer_label(value) -> int | None:
    """The integer a label value spells, else None: 3, 3.0, "3", " 03", "3.0", "+3" -> 3.

    NaN, None, booleans, non-integer numbers and other text return None.
    """
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return int(number) if math.isfinite(number) and number.is_integer() else None
    text = str(value).strip()
    if not text:
        return None
    try:
        return int(text, 10)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


MISSING_LABEL_TEXTS = frozenset({"", "nan", "none", "null", "na", "n/a", "<na>"})
"""Spellings of a missing label (compared lower-case, stripped)."""


def is_missing_label(value) -> bool:
    """True for None, NaN, pandas NA and the empty / "NaN" / "None" / "null" / "NA" spellings."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(float(value)):
        return True
    if type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, (str, np.str_)) and value.strip().lower() in MISSING_LABEL_TEXTS


def is_non_integer_number(value) -> bool:
    """True for a number (or its spelling) that is not a whole number: 0.5, "2.5", inf."""
    if isinstance(value, (bool, np.bool_)) or is_missing_label(value):
        return False
    if isinstance(value, (int, np.integer)):
        return False
    try:
        number = float(value if not isinstance(value, str) else value.strip())
    except (TypeError, ValueError):
        return False
    return not (math.isfinite(number) and number.is_integer())


def check_labels(labels, *, name: str = "labels", num_classes: int | None = None,
                 allow_empty: bool = False) -> np.ndarray:
    """(N,) int64 class ids from ``labels`` (see the module doc for what is accepted).

    Raises DataError naming ``name`` and the rows when a label is missing, not a whole number,
    negative, or (with ``num_classes``) not below ``num_classes``; or when there are no labels.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim == 2 and 1 in array.shape else array
    if array.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of class ids, got shape {array.shape}; "
                        "save one label per sample")
    if not allow_empty and array.size == 0:
        raise DataError(f"{name} is empty (N=0); there is nothing to score: give at least one sample")
    if array.dtype.kind == "b":
        raise DataError(f"{name} holds booleans, not class ids; save integer labels 0..K-1")
    if array.dtype.kind in "iu":
        ids = array.astype(np.int64)
    else:
        ids = _integer_ids(array, name)
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        raise DataError(f"{name}: negative class id at {describe_rows(negative, values=ids[negative])}; "
                        "class ids run 0..K-1")
    if num_classes is not None:
        too_big = np.flatnonzero(ids >= num_classes)
        if too_big.size:
            raise DataError(f"{name}: class id >= {num_classes} (the number of classes) at "
                            f"{describe_rows(too_big, values=ids[too_big])}; pass the right number "
                            "of classes or fix the labels")
    return ids


def _integer_ids(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind == "f":
        values = array.astype(np.float64)
        missing = np.flatnonzero(np.isnan(values))
        fractional = np.flatnonzero(~np.isnan(values) & ~(np.isfinite(values) & (values == np.round(values))))
    else:
        values = array.tolist()
        missing = np.array([i for i, v in enumerate(values) if is_missing_label(v)], dtype=np.int64)
        fractional = np.array([i for i, v in enumerate(values) if is_non_integer_number(v)], dtype=np.int64)
    if len(missing):
        raise DataError(f"{name}: missing label (NaN / None / empty) at {describe_rows(missing)}; "
                        "fill them in or drop those samples")
    if len(fractional):
        shown = [array[i] for i in fractional[:SHOWN_ROWS]]
        raise DataError(f"{name}: not a whole number at {describe_rows(fractional, values=shown)}; "
                        "labels are class ids 0..K-1 (an integer is never rounded or truncated)")
    if array.dtype.kind == "f":
        return values.astype(np.int64)
    ids = [integer_label(v) for v in values]
    text = [i for i, v in enumerate(ids) if v is None]
    if text:
        shown = [values[i] for i in text[:SHOWN_ROWS]]
        raise DataError(f"{name}: not a class id at {describe_rows(text, values=shown)}; this input "
                        "takes integer class ids 0..K-1 (map class names to ids first, e.g. with "
                        "numpy.unique(names, return_inverse=True))")
    return np.asarray(ids, dtype=np.int64)


def check_features(features, *, name: str = "image features", n: int | None = None,
                   dim: int | None = None, nonzero: bool = False) -> np.ndarray:
    """A 2-D (N, D) float array with N >= 1, D >= 1 and every value finite.

    ``n`` / ``dim`` require that many rows / columns; ``nonzero`` also refuses all-zero rows (which
    cannot be L2-normalised). The array is returned as float32 or float64 (its own precision);
    it is copied only when it was not floating point.
    """
    array = np.asarray(features)
    if array.dtype.kind not in "fiu" or array.dtype.kind == "b":
        raise DataError(f"{name} must be numbers, got dtype {array.dtype}; save a float array "
                        "with numpy.save")
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D (N, D) array, got shape {array.shape}")
    if array.shape[0] == 0:
        raise DataError(f"{name} has no rows (N=0); there is nothing to score: give at least one sample")
    if array.shape[1] == 0:
        raise DataError(f"{name} has no columns (D=0); give one embedding vector per row")
    if n is not None and array.shape[0] != n:
        raise DataError(f"{name} has {array.shape[0]} rows but {n} were expected (one per sample)")
    if dim is not None and array.shape[1] != dim:
        raise DataError(f"{name} have {array.shape[1]} dimensions but {dim} were expected; both must "
                        "come from the same model")
    if array.dtype.kind != "f":
        array = array.astype(np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{name}: NaN or infinite values in {describe_rows(bad)}; re-compute those "
                        "embeddings or drop the samples")
    if nonzero:
        zero = np.flatnonzero(~np.any(array != 0, axis=1))
        if zero.size:
            raise DataError(f"{name}: all-zero vector in {describe_rows(zero)}; an embedding cannot be "
                            "all zeros (it has no direction); re-compute it")
    return array


def check_probabilities(probabilities, *, name: str = "probabilities", n: int | None = None,
                        num_classes: int | None = None, log: bool = False,
                        atol: float = 1e-4) -> np.ndarray:
    """An (N, K) float array of per-row probability distributions (or their logs with ``log``).

    Every value finite (log: -inf allowed for probability 0) and in [0, 1], and every row summing
    to 1 within ``atol``.
    """
    array = np.asarray(probabilities)
    if array.dtype.kind not in "fiu" or array.dtype.kind == "b":
        raise DataError(f"{name} must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{name} must be a non-empty 2-D (N, K) array, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise DataError(f"{name} has {array.shape[0]} rows but {n} were expected (one per sample)")
    if num_classes is not None and array.shape[1] != num_classes:
        raise DataError(f"{name} has {array.shape[1]} columns but there are {num_classes} classes")
    probs = np.exp(array) if log else array
    bad_value = np.isnan(array) | (np.isposinf(array) if log else ~np.isfinite(array))
    bad_value |= (probs < 0) | (probs > 1 + atol)
    rows = np.flatnonzero(bad_value.any(axis=1))
    if rows.size:
        raise DataError(f"{name}: values outside [0, 1] (or NaN / inf) in {describe_rows(rows)}; "
                        f"give {'log-' if log else ''}probabilities")
    sums = probs.sum(axis=1)
    rows = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if rows.size:
        raise DataError(f"{name}: rows do not sum to 1 ({describe_rows(rows, values=np.round(sums[rows], 4).tolist())}); "
                        "pass normalised probabilities (a softmax), not scores")
    return array


def check_same_length(**arrays) -> int:
    """The common length of the named 1-D / 2-D inputs (None entries skipped), else DataError."""
    lengths = {key: len(value) for key, value in arrays.items() if value is not None}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key} has {length}" for key, length in lengths.items())
        raise DataError(f"inputs differ in length ({shown}); give one row per sample in each")
    return next(iter(lengths.values()), 0)
