"""Export a score table: tables (CSV / Parquet / JSON), a clean manifest, an ImageFolder tree, a recipe.

The score table (DESIGN §6) arrives with review decisions already applied (``final_label``). The
samples an export keeps (:func:`kept_mask`) are those with ``is_clean``, except that a reviewer's
explicit decision wins: "drop" removes a sample, "keep" and "relabel" keep it.

Safety: every file is written atomically with a JSON sidecar (``<file>.json``) holding the caller's
``meta`` plus an ``export`` summary; an ImageFolder export is built in a hidden sibling folder and
renamed into place, so an interrupted export leaves nothing behind; no export writes over a dataset's
own files or inside (or around) a file-backed dataset's folder. A killed ImageFolder export's hidden
folder is removed by the next export to the same place (:mod:`clipcleaner_core.partial`).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from clipcleaner_core import __version__
from clipcleaner_core.atomic import StorageError, json_default, write_bytes, write_sidecar
from clipcleaner_core.errors import Cancelled, ConfigError, DataError
from clipcleaner_core.guard import same_file
from clipcleaner_core.partial import PartialFolder
from clipcleaner_core.validation import check_labels, describe_rows
from clipcleaner_core.paths import is_within
from clipcleaner_core.schema import kept_mask  # noqa: F401  (the export keeps what the schema says)

if TYPE_CHECKING:
    from clipcleaner_core.data.dataset import Dataset

log = logging.getLogger(__name__)

TABLE_FORMATS = ("csv", "parquet", "json")
BYTES_FORMATS = TABLE_FORMATS + ("manifest", "recipe")
FORMATS = BYTES_FORMATS + ("imagefolder",)
LINK_MODES = ("symlink", "copy")
INT_COLUMNS = ("index", "given_label", "suggested_label", "final_label", "true_label", "duplicate_group",
               "cross_split_match")
BOOL_COLUMNS = ("is_label_issue", "is_clean", "is_noisy", "is_conflicting_duplicate", "is_outlier",
                "duplicate_across_splits")
FLOAT_COLUMNS = ("label_score", "zs_loss_score", "zs_consistency", "lr_loss_score", "lr_consistency",
                 "zs_clean_prob", "lr_clean_prob", "knn_agreement", "lemon_score", "lemon_clean_prob",
                 "outlier_score")
STR_COLUMNS = ("path", "review_decision")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}
"""File extension -> table format, for reading and writing score tables."""
_VERSIONED = ("numpy", "pandas", "scikit-learn", "torch", "open_clip_torch", "umap-learn")


def export(table: pd.DataFrame, fmt: str, out: str | os.PathLike, *, dataset: "Dataset | None" = None,
           class_names=None, meta: dict | None = None, link: str = "symlink", clean_only: bool = False,
           overwrite: bool = False, progress: Callable | None = None,
           cancel: Callable[[], bool] | None = None) -> Path:
    """Write ``table`` to ``out`` as ``fmt`` and return ``out``.

    Parameters
    ----------
    table
        score table (DESIGN §6), one row per sample, decisions applied.
    fmt
        "csv", "parquet", "json" (the table), "manifest" (CSV ``path,label`` of the kept samples,
        label = class name of ``final_label``), "imagefolder" (``out/<class>/<file>`` of the kept
        samples; needs ``dataset``) or "recipe" (JSON of ``meta`` + table summary and hash).
    dataset
        the dataset the table describes (needed for "imagefolder"; gives paths and names).
    class_names
        names of labels 0..K-1 (default: the dataset's; else the numbers).
    meta
        settings that produced the table (model, prompts hash, thresholds...), saved in sidecars.
    link
        "symlink" or "copy" for file-backed ImageFolder exports (in-memory images become PNGs).
    clean_only
        table formats keep only the kept samples.
    overwrite
        replace an existing non-empty ImageFolder export (built aside, swapped in at once).
    progress
        ``progress("export", done, total, rate)`` while ImageFolder files are written.
    cancel
        ``cancel() -> bool``; True stops an ImageFolder export (nothing is left behind).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from clipcleaner_core import find_label_issues
    >>> from clipcleaner_core.export import export, read_table
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(200, 2, 8, seed=0)
    >>> table = find_label_issues(p["features"], p["labels"])
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> export(table, "csv", folder / "scores.csv").name
    'scores.csv'
    >>> back = read_table(folder / "scores.csv")
    >>> back.shape == table.shape, bool((back["label_score"] == table["label_score"]).all())
    (True, True)
    >>> manifest = export(table, "manifest", folder / "clean.csv", class_names=["cat", "dog"])
    >>> manifest.read_text().splitlines()[0]
    'path,label'
    >>> export(table, "xlsx", folder / "scores.xlsx")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.ConfigError: unknown export format 'xlsx'; choose one of csv, parquet, json, ...
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if link not in LINK_MODES:
        raise ConfigError(f"unknown link mode {link!r}; choose one of {', '.join(LINK_MODES)}")
    out = Path(out).expanduser().absolute()
    names = _class_names(table, dataset, class_names)
    sidecar = _sidecar(table, fmt, meta, dataset, names, clean_only=clean_only)
    _refuse_originals(out, dataset, folder=fmt == "imagefolder")
    try:
        _write(table, fmt, out, dataset, names, meta=meta, link=link, clean_only=clean_only,
               overwrite=overwrite, progress=progress, cancel=cancel)
    except StorageError:
        raise  # already names the folder, the space needed and free, and the fix
    except OSError as exc:
        raise DataError(f"cannot write the {fmt} export to {out}: {exc.strerror or exc}; check that the "
                        "folder is writable and has free space (nothing was left half-written)") from exc
    write_sidecar(out, sidecar)
    log.info("exported %s to %s", fmt, out)
    return out


def _write(table, fmt, out: Path, dataset, names, *, meta, link, clean_only, overwrite, progress,
           cancel) -> None:
    if fmt == "imagefolder":
        if dataset is None:
            raise DataError("an imagefolder export needs the dataset (its images); pass dataset=...")
        _export_imagefolder(table, out, dataset, names, link=link, overwrite=overwrite,
                            progress=progress, cancel=cancel)
        return
    if out.is_dir():
        raise DataError(f"{out} is a folder; give a file name for the {fmt} export")
    write_bytes(out, export_bytes(table, fmt, dataset=dataset, class_names=names, meta=meta,
                                  clean_only=clean_only, manifest_folder=out.parent))


def export_bytes(table: pd.DataFrame, fmt: str, *, dataset: "Dataset | None" = None, class_names=None,
                 meta: dict | None = None, clean_only: bool = False,
                 manifest_folder: str | os.PathLike | None = None) -> bytes:
    """The bytes of a csv / parquet / json / manifest / recipe export (for download buttons).

    A manifest's paths are relative to ``manifest_folder`` when the images lie under it, else
    absolute; with no folder they are relative to the dataset root (save the manifest there).

    Examples
    --------
    >>> import io
    >>> import pandas as pd
    >>> from clipcleaner_core import find_label_issues
    >>> from clipcleaner_core.export import export_bytes
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(100, 2, 8, seed=0)
    >>> data = export_bytes(find_label_issues(p["features"], p["labels"]), "csv")
    >>> pd.read_csv(io.BytesIO(data)).columns[:4].tolist()
    ['index', 'path', 'given_label', 'suggested_label']
    """
    if fmt not in BYTES_FORMATS:
        raise ConfigError(f"export_bytes: unknown format {fmt!r}; choose one of {', '.join(BYTES_FORMATS)}")
    names = _class_names(table, dataset, class_names)
    if fmt == "recipe":
        return _json_bytes(recipe(table, meta=meta, dataset=dataset, class_names=names))
    if fmt == "manifest":
        return _manifest(table, dataset, names, manifest_folder).to_csv(index=False).encode("utf-8")
    rows = table[kept_mask(table)] if clean_only else table
    if fmt == "csv":
        return _csv_bytes(rows)
    if fmt == "parquet":
        buffer = io.BytesIO()
        rows.to_parquet(buffer, index=False)
        return buffer.getvalue()
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    return _json_bytes(records, indent=None)


def _csv_bytes(rows: pd.DataFrame) -> bytes:
    """CSV through Arrow's writer: 7x faster than pandas' (its float formatting is Python-level),
    exact floats (shortest round-trip form), NaN as an empty cell, booleans as true / false."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    frame = rows.reset_index(drop=True)
    for column in frame.columns:  # Arrow's CSV writer takes no dictionary (categorical) columns
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    buffer = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer,
                     pa_csv.WriteOptions(quoting_style="needed"))
    return buffer.getvalue()


def table_format(path: str | os.PathLike, *, what: str = "score table") -> str:
    """The table format ("csv", "parquet" or "json") named by ``path``'s extension.

    Raises DataError naming ``what`` and ``path`` when the extension is not one of
    :data:`TABLE_SUFFIXES`.

    Examples
    --------
    >>> from clipcleaner_core.export import table_format
    >>> table_format("scores.parquet"), table_format("run/SCORES.CSV")
    ('parquet', 'csv')
    >>> table_format("scores.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.DataError: score table scores.txt: unknown extension .txt; use one of .csv, ...
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{what} {path}: unknown extension {suffix or '(none)'}; "
                        f"use one of {', '.join(TABLE_SUFFIXES)}")
    return TABLE_SUFFIXES[suffix]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a csv / parquet / json score table back with the dtypes it was written with.

    Examples
    --------
    See :func:`export`; a missing file is named with the way to make one:

    >>> from clipcleaner_core.export import read_table
    >>> read_table("missing.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.DataError: score table missing.csv not found; check the path, ...
    """
    path = Path(path)
    kind = table_format(path)
    if not path.is_file():
        raise DataError(f"score table {path} not found; check the path, or write one with "
                        "'python -m clipcleaner_core run ... --out scores.csv'")
    try:
        if kind == "csv":
            table = pd.read_csv(path, dtype={c: str for c in STR_COLUMNS}, keep_default_na=False,
                                na_values={c: ["", "nan", "NaN"] for c in FLOAT_COLUMNS},
                                **_ROUND_TRIP)
        elif kind == "parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read score table {path}: {str(exc).splitlines()[0]}") from None
    return _coerce(table, path)


#: pandas 3.1 reads floats back exactly by default and deprecates asking for it; before, ask
_ROUND_TRIP = ({} if tuple(int(v) for v in pd.__version__.split(".")[:2] if v.isdecimal()) >= (3, 1)
               else {"float_precision": "round_trip"})


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of the table's (index, final_label, is_clean) columns, rows ordered by index.

    Examples
    --------
    >>> from clipcleaner_core import find_label_issues
    >>> from clipcleaner_core.export import table_digest
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(100, 2, 8, seed=0)
    >>> table = find_label_issues(p["features"], p["labels"])
    >>> table_digest(table) == table_digest(table.iloc[::-1])  # row order does not matter
    True
    >>> len(table_digest(table))
    64
    """
    _require(table, ("index", "final_label", "is_clean"))
    order = np.argsort(table["index"].to_numpy(dtype=np.int64), kind="stable")
    digest = hashlib.sha256(b"clipcleaner-table-v1|")
    for column, dtype in (("index", "<i8"), ("final_label", "<i8"), ("is_clean", "u1")):
        digest.update(table[column].to_numpy().astype(dtype)[order].tobytes())
    return digest.hexdigest()


def table_summary(table: pd.DataFrame, *, class_names=None) -> dict:
    """Counts describing a score table: rows, kept, flagged, relabelled, dropped, kept per class.

    Examples
    --------
    >>> from clipcleaner_core import find_label_issues
    >>> from clipcleaner_core.export import table_summary
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(100, 2, 8, seed=0)
    >>> summary = table_summary(find_label_issues(p["features"], p["labels"]),
    ...                         class_names=["cat", "dog"])
    >>> summary["rows"], summary["kept"] + summary["flagged"], sorted(summary["kept_per_class"])
    (100, 100, ['cat', 'dog'])
    """
    keep = kept_mask(table)
    summary = {"rows": int(len(table)), "kept": int(keep.sum()), "flagged": int((~keep).sum())}
    if "given_label" in table.columns and "final_label" in table.columns:
        summary["relabelled"] = int((table["given_label"] != table["final_label"]).sum())
    if "review_decision" in table.columns:
        decisions = table["review_decision"].dropna().astype(str)
        summary["reviewed"] = {d: int(n) for d, n in decisions[decisions != ""].value_counts().items()}
    if "final_label" in table.columns:
        counts = np.bincount(table["final_label"].to_numpy(dtype=np.int64)[keep],
                             minlength=len(class_names or ()))
        summary["kept_per_class"] = {_name(class_names, k): int(n) for k, n in enumerate(counts)}
    if "index" in table.columns:
        summary["table_sha256"] = table_digest(table)
    return summary


def recipe(table: pd.DataFrame, *, meta: dict | None = None, dataset: "Dataset | None" = None,
           class_names=None) -> dict:
    """Everything needed to reproduce a selection: settings, versions, dataset, table hash.

    Examples
    --------
    >>> from clipcleaner_core import find_label_issues
    >>> from clipcleaner_core.export import recipe
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(100, 2, 8, seed=0)
    >>> made = recipe(find_label_issues(p["features"], p["labels"]), meta={"theta_cons": 0.8})
    >>> made["format"], made["settings"]
    ('clipcleaner-recipe', {'theta_cons': 0.8})
    """
    names = _class_names(table, dataset, class_names)
    return {
        "format": "clipcleaner-recipe", "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": _versions(),
        "settings": dict(meta or {}),
        "dataset": _describe_dataset(dataset) if dataset is not None else (meta or {}).get("dataset"),
        "class_names": list(names) if names else None,
        "table": table_summary(table, class_names=names),
    }


def _export_imagefolder(table, out: Path, dataset, names, *, link, overwrite, progress, cancel) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is a file; give a folder for the imagefolder export")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out} already exists and is not empty; choose a new folder or pass "
                        "overwrite=True (--overwrite) to replace it")
    building = PartialFolder(out)
    with building as partial:  # entering also removes what killed exports left beside ``out``
        _fill_folder(partial, table[kept_mask(table)], dataset, names, link, progress, cancel)
        building.commit()


def _fill_folder(folder: Path, rows: pd.DataFrame, dataset, names, link, progress, cancel) -> None:
    _require(rows, ("index", "final_label"))
    class_dirs = _class_folders(names)
    used: dict[int, set[str]] = {}
    started, total = time.perf_counter(), len(rows)
    for done, (index, label) in enumerate(zip(rows["index"].to_numpy(), rows["final_label"].to_numpy())):
        if cancel is not None and done % 64 == 0 and cancel():
            raise Cancelled("export cancelled; nothing was written")
        label, index = int(label), int(index)
        target_dir = folder / class_dirs[label]
        target_dir.mkdir(exist_ok=True)
        rel = dataset.paths[index]
        suffix = ".png" if dataset.images is not None else Path(rel).suffix
        stem = rel.replace("/", "_") if dataset.images is not None else Path(rel).stem
        target = target_dir / _unique_name(used.setdefault(label, set()), stem, suffix, index)
        _write_sample(dataset, index, target, link)
        if progress is not None and (done % 256 == 255 or done == total - 1):
            progress("export", done + 1, total, (done + 1) / max(time.perf_counter() - started, 1e-9))


def _write_sample(dataset, index: int, target: Path, link: str) -> None:
    if dataset.images is not None:
        from PIL import Image

        Image.fromarray(np.asarray(dataset.images[index], dtype=np.uint8)).save(target, format="PNG")
        return
    source = dataset.abspath(index)
    if not source.is_file():
        raise DataError(f"image {source} (sample {index}) no longer exists; reload the dataset")
    if link == "symlink":
        os.symlink(source.resolve(), target)
    else:
        shutil.copy2(source, target)


def _class_folders(names) -> dict[int, str]:
    folders: dict[int, str] = {}
    for k, name in enumerate(names):
        folder = "".join("_" if ch in '/\\:*?"<>|\0' else ch for ch in str(name)).strip()
        if folder in ("", ".", "..") or folder.startswith("."):
            folder = f"class_{k}"
        if folder in folders.values():
            folder = f"{folder}_{k}"
        folders[k] = folder
    return folders


def _unique_name(used: set[str], stem: str, suffix: str, index: int) -> str:
    name = f"{stem}{suffix}" if f"{stem}{suffix}" not in used else f"{stem}-{index}{suffix}"
    used.add(name)
    return name


def _manifest(table, dataset, names, folder) -> pd.DataFrame:
    _require(table, ("path", "final_label", "is_clean"))
    if dataset is not None and dataset.images is not None:
        raise DataError(f"dataset {dataset.name!r} keeps its images in memory, so a manifest of paths "
                        "cannot point at them; export 'imagefolder' instead (it writes PNG files)")
    rows = table[kept_mask(table)]
    paths = [_manifest_path(p, dataset, folder) for p in rows["path"].astype(str)]
    labels = [_name(names, k) for k in rows["final_label"].to_numpy(dtype=np.int64)]
    return pd.DataFrame({"path": paths, "label": labels})


def _manifest_path(rel: str, dataset, folder) -> str:
    if folder is None:
        return Path(rel).as_posix()
    # the dataset's root may be relative to the working folder, never to the manifest's folder
    full = Path(os.path.abspath(Path(folder) / rel if dataset is None else Path(dataset.root) / rel))
    if is_within(full, folder):
        return Path(os.path.relpath(full, os.path.abspath(folder))).as_posix()
    return str(full)


def _holds_images(out: Path, dataset) -> bool:
    """Whether the folder ``out`` is, or holds, any of the dataset's image files."""
    rel = Path(os.path.relpath(Path(out).resolve(), Path(dataset.root).resolve())).as_posix()
    if rel in (".", ""):
        return True
    prefix = rel.rstrip("/") + "/"
    return any(path.startswith(prefix) for path in dataset.paths)


def _refuse_originals(out: Path, dataset, *, folder: bool) -> None:
    if dataset is None:
        return
    protected = [Path(dataset.spec)] if dataset.spec and Path(dataset.spec).exists() else []
    if dataset.images is None:
        protected.append(Path(dataset.root))
        if not folder and is_within(out, dataset.root):
            rel = Path(os.path.relpath(out.resolve(), Path(dataset.root).resolve())).as_posix()
            if rel in set(dataset.paths):
                raise DataError(f"{out} is one of the dataset's images; choose another file name")
    for original in protected:
        if same_file(out, original) or (folder and is_within(original, out)):
            raise DataError(f"refusing to write {out}: it would replace the dataset's own files "
                            f"({original}); choose a folder outside the dataset")
        if folder and dataset.images is None and is_within(out, original):
            if dataset.kind == "manifest" and not _holds_images(out, dataset):
                continue  # a manifest lists its images: a new folder beside them adds none
            raise DataError(f"refusing to write {out} inside the dataset folder {original}; choose a "
                            "folder outside it (an export never touches the original images)")


def _sidecar(table, fmt, meta, dataset, names, *, clean_only) -> dict:
    sidecar = dict(meta or {})
    if dataset is not None and "dataset" not in sidecar:
        sidecar["dataset"] = _describe_dataset(dataset)
    info = {"format": fmt, "clean_only": bool(clean_only), "clipcleaner": __version__}
    if "is_clean" in table.columns:
        info.update(table_summary(table, class_names=names))
    sidecar["export"] = info
    return sidecar


def _describe_dataset(dataset) -> dict:
    return {"name": dataset.name, "kind": dataset.kind, "spec": dataset.spec, "split": dataset.split,
            "root": str(dataset.root), "n": len(dataset), "fingerprint": dataset.fingerprint(),
            "class_names": list(dataset.class_names), "noise": dataset.noise}


def _versions() -> dict:
    versions = {"clipcleaner": __version__, "python": platform.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _class_names(table, dataset, class_names) -> tuple[str, ...] | None:
    names = class_names if class_names is not None else (dataset.class_names if dataset is not None else None)
    if names is None:
        return None
    names = tuple(str(n) for n in names)
    for column in ("final_label", "given_label"):
        if column in table.columns and len(table):
            labels = table[column].to_numpy(dtype=np.int64)
            if labels.min() < 0 or labels.max() >= len(names):
                raise DataError(f"score table column {column} has label {int(labels.max())} but only "
                                f"{len(names)} class names were given; pass the dataset's class names")
    return names


def _name(names, k: int) -> str:
    return names[k] if names else str(int(k))


def _require(table: pd.DataFrame, columns) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"score table lacks column(s) {', '.join(missing)}; export a table made by "
                        "clipcleaner (score_table / 'run'), not a hand-edited one")


TRUE_TEXTS = frozenset({"true", "1", "1.0", "yes", "y", "t"})
FALSE_TEXTS = frozenset({"false", "0", "0.0", "no", "n", "f"})


def _coerce(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    for column in INT_COLUMNS:
        if column in table.columns:
            if table[column].isna().any():
                raise DataError(f"score table {path}: column {column} has empty cells; it must be whole numbers")
            if table[column].dtype.kind not in "iu":
                table[column] = check_labels(table[column].to_numpy(), name=f"score table {path}: column "
                                             f"{column}", allow_empty=True)
            table[column] = table[column].astype(np.int64)
    for column in BOOL_COLUMNS:
        if column in table.columns and table[column].dtype != bool:
            text = table[column].astype(str).str.strip().str.lower()
            unknown = np.flatnonzero(~text.isin(TRUE_TEXTS | FALSE_TEXTS).to_numpy())
            if unknown.size:
                raise DataError(f"score table {path}: column {column} must be true or false, not "
                                f"{describe_rows(unknown, values=table[column].to_numpy()[unknown])}")
            table[column] = text.isin(TRUE_TEXTS)
    for column in FLOAT_COLUMNS:
        if column in table.columns:
            table[column] = table[column].astype(np.float64)
    for column in STR_COLUMNS:
        if column in table.columns:
            table[column] = table[column].astype("str")
    return table


def _json_bytes(obj, *, indent: int | None = 2) -> bytes:
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default)
    return (text + "\n").encode("utf-8")


def _json_default(value):
    """:func:`clipcleaner_core.atomic.json_default`, but a numpy NaN becomes null."""
    if isinstance(value, np.floating) and np.isnan(value):
        return None
    return json_default(value)
