"""Is a score table still about the dataset it names? And if not, can its rows be matched by path?

A score table's ``index`` column points at dataset rows. Its sidecar records the dataset it was
made on (``fingerprint``, ``n``, ``class_names``); its ``path`` and ``given_label`` columns say what
each row was. :func:`align_table` checks both against the dataset as loaded now. When they agree
the table is returned as it is; when they do not, it raises :class:`DatasetMismatchError` saying
what changed (files added, removed, relabelled, reordered, classes) and how to proceed, unless the
caller asked to match rows by path (``by_path=True``) and that match is exact: every row's path is
found exactly once in the dataset. Label ids are then carried over by class name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError, DatasetMismatchError

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("given_label", "suggested_label", "final_label", "true_label")
SHOWN = 3
"""How many example paths a message names per kind of change."""


@dataclass(frozen=True)
class Changes:
    """What differs between a table (and its sidecar record) and the dataset as loaded now."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    relabelled: tuple[str, ...] = ()
    reordered: int = 0
    classes: str = ""
    files_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.relabelled or self.reordered or self.classes
                    or self.files_changed)

    def describe(self) -> str:
        parts = []
        for items, what in ((self.added, "in the dataset but not in the table (added since)"),
                            (self.removed, "in the table but no longer in the dataset (removed)"),
                            (self.relabelled, "relabelled in the dataset since")):
            if items:
                parts.append(f"{len(items)} file{'s' if len(items) > 1 else ''} {what}: {_examples(items)}")
        if self.reordered:
            parts.append(f"{self.reordered} row{'s' if self.reordered > 1 else ''} of the table now point "
                         "at other files (the dataset's order changed)")
        if self.classes:
            parts.append(self.classes)
        if self.files_changed and not parts:
            parts.append("the same files and labels, but file sizes or modification times differ "
                         "(files edited, re-encoded or copied)")
        return "; ".join(parts)


def _examples(items) -> str:
    shown = ", ".join(repr(p) for p in items[:SHOWN])
    return shown + (", ..." if len(items) > SHOWN else "")


def align_table(table: pd.DataFrame, dataset, *, recorded: dict | None = None,
                source: str = "the score table", by_path: bool = False,
                by_path_hint: str = "by_path=True", rerun_hint: str = "re-run the selection") -> pd.DataFrame:
    """``table`` with its ``index`` (and label ids) pointing at ``dataset`` as it is now.

    Parameters
    ----------
    table
        a score table (``index``; ideally ``path`` and ``given_label``).
    dataset
        the :class:`~.dataset.Dataset` the table is applied to.
    recorded
        the sidecar's ``dataset`` entry (``fingerprint``, ``n``, ``class_names``), if any.
    source
        how messages name the table ("scores.csv").
    by_path
        on a mismatch, match rows by ``path`` when that is exact instead of stopping.
    by_path_hint, rerun_hint
        how messages tell the user to do either.

    Raises DatasetMismatchError saying what changed and how to proceed.
    """
    if "index" not in table.columns:
        raise DataError(f"{source} has no 'index' column; use a score table written by clipcleaner")
    recorded = recorded or {}
    names_then = tuple(str(n) for n in recorded.get("class_names") or dataset.class_names)
    index = table["index"].to_numpy(dtype=np.int64)
    paths = _paths(table)
    changes = _changes(table, index, paths, dataset, recorded, names_then)
    if not changes:
        return table
    exact, why_not = _path_match_is_exact(paths, dataset)
    if by_path and exact:
        matched = _match_by_path(table, paths, dataset, names_then, source)
        logger.warning("%s: matched %d rows to %s by path (%s)", source, len(matched), dataset.name,
                       changes.describe())
        return matched
    how = f"re-run the selection on the dataset as it is now ({rerun_hint})"
    if exact:
        how += (f", or match the table's rows to the dataset by file path ({by_path_hint}; "
                "every row's path is found exactly once)")
    else:
        how += f"; matching rows by path is not possible: {why_not}"
    raise DatasetMismatchError(f"{source} was made on a different version of dataset "
                               f"{dataset.name!r}: {changes.describe()}. To proceed, {how}.")


def _paths(table: pd.DataFrame) -> np.ndarray | None:
    if "path" not in table.columns:
        return None
    paths = table["path"].astype(object).where(table["path"].notna(), "").astype(str).to_numpy()
    return None if not len(paths) or (paths == "").all() else paths


def _changes(table, index, paths, dataset, recorded, names_then) -> Changes:
    n = len(dataset)
    fingerprint = recorded.get("fingerprint")
    fingerprint_differs = bool(fingerprint) and fingerprint != dataset.fingerprint()
    classes = _class_change(names_then, dataset.class_names)
    in_range = bool(len(index) == 0 or (index.min() >= 0 and index.max() < n))
    if paths is None:
        return _changes_without_paths(table, index, dataset, recorded, names_then, in_range,
                                      fingerprint_differs, classes)
    now = np.asarray(dataset.paths, dtype=object)
    where_now = {p: i for i, p in enumerate(dataset.paths)}
    relabelled = _relabelled(table, paths, where_now, dataset, names_then)
    lined_up = in_range and bool(np.all(now[index] == paths)) if len(index) else True
    if lined_up and not relabelled and not classes and not fingerprint_differs:
        return Changes()
    in_table = set(paths.tolist())
    removed = tuple(p for p in paths if p not in where_now)
    added = tuple(p for p in dataset.paths if p not in in_table)
    if lined_up and not removed:  # rows left out when the table was made are not "added"
        added = tuple(p for p in added if where_now[p] >= int(recorded.get("n") or n))
    reordered = 0 if lined_up or removed or added else int(np.sum(now[index] != paths))
    return Changes(added=added, removed=removed, relabelled=relabelled, reordered=reordered,
                   classes=classes, files_changed=fingerprint_differs)


def _changes_without_paths(table, index, dataset, recorded, names_then, in_range,
                           fingerprint_differs, classes) -> Changes:
    """A table without paths (made by ``select`` from arrays) can only be checked by count and label."""
    n = len(dataset)
    if not in_range:
        return Changes(classes=classes or f"the table's index runs to {int(index.max())} but the "
                       f"dataset has {n} samples")
    if recorded.get("n") is not None and int(recorded["n"]) != n:
        return Changes(classes=f"the dataset had {recorded['n']} samples, it now has {n}")
    if "given_label" in table.columns:
        given = _map_ids(table["given_label"].to_numpy(dtype=np.int64), names_then, dataset.class_names)
        changed = np.flatnonzero(given != dataset.labels[index])
        if changed.size:
            rows = ", ".join(str(int(index[i])) for i in changed[:SHOWN])
            return Changes(classes=classes or f"{changed.size} sample(s) have another label now "
                           f"(dataset rows {rows}{', ...' if changed.size > SHOWN else ''})")
    return Changes(classes=classes, files_changed=fingerprint_differs)


def _relabelled(table, paths, where_now, dataset, names_then) -> tuple[str, ...]:
    if "given_label" not in table.columns:
        return ()
    given = table["given_label"].to_numpy(dtype=np.int64)
    out = []
    for path, label in zip(paths, given):
        row = where_now.get(path)
        if row is None or not 0 <= label < len(names_then):
            continue
        if names_then[label] != dataset.class_names[dataset.labels[row]]:
            out.append(path)
    return tuple(out)


def _class_change(then: tuple[str, ...], now: tuple[str, ...]) -> str:
    if tuple(then) == tuple(now):
        return ""
    gone = [c for c in then if c not in set(now)]
    new = [c for c in now if c not in set(then)]
    parts = []
    if gone:
        parts.append(f"class(es) {_examples(gone)} no longer exist")
    if new:
        parts.append(f"class(es) {_examples(new)} are new")
    if not parts:
        parts.append("the classes are in another order")
    return "; ".join(parts)


def _path_match_is_exact(paths, dataset) -> tuple[bool, str]:
    if paths is None:
        return False, "the table has no paths (it was made from arrays, not from a dataset)"
    counts = pd.Series(paths).value_counts()
    if (counts > 1).any():
        return False, f"the table lists {_examples(counts[counts > 1].index.tolist())} more than once"
    now = pd.Series(dataset.paths).value_counts()
    if (now > 1).any():
        return False, f"the dataset lists {_examples(now[now > 1].index.tolist())} more than once"
    missing = [p for p in paths if p not in now.index]
    if missing:
        return False, f"{len(missing)} of the table's paths are not in the dataset ({_examples(missing)})"
    return True, ""


def _match_by_path(table, paths, dataset, names_then, source) -> pd.DataFrame:
    where_now = {p: i for i, p in enumerate(dataset.paths)}
    matched = table.copy()
    matched["index"] = np.array([where_now[p] for p in paths], dtype=np.int64)
    gone = [c for c in names_then if c not in set(dataset.class_names)]
    for column in LABEL_COLUMNS:
        if column not in matched.columns:
            continue
        ids = matched[column].to_numpy(dtype=np.int64)
        used = {names_then[k] for k in np.unique(ids) if 0 <= k < len(names_then)}
        if used & set(gone):
            raise DatasetMismatchError(f"{source}: column {column} uses class(es) "
                                       f"{_examples(sorted(used & set(gone)))} that the dataset no "
                                       "longer has; rows cannot be matched by path; re-run the selection")
        matched[column] = _map_ids(ids, names_then, dataset.class_names)
    return matched


def _map_ids(ids: np.ndarray, then: tuple[str, ...], now: tuple[str, ...]) -> np.ndarray:
    """Label ids under the class list ``then`` as ids under ``now`` (by name; -1 if gone)."""
    if tuple(then) == tuple(now):
        return ids
    lookup = {name: k for k, name in enumerate(now)}
    table = np.array([lookup.get(name, -1) for name in then], dtype=np.int64)
    out = np.full(len(ids), -1, dtype=np.int64)
    ok = (ids >= 0) & (ids < len(then))
    out[ok] = table[ids[ok]]
    return out
