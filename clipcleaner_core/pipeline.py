"""The pipeline: dataset -> embeddings -> fitted scores -> selection -> score table.

Two calls split the expensive part from the cheap one:

* :func:`prepare` embeds the images (cached by content), builds the prompt ensemble's text
  features and fits the probabilities, scores and mixtures (cached by the hash of their inputs).
* :func:`select_samples` applies thresholds and review decisions to a prepared fit; it takes
  milliseconds, so a slider can call it on every move.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from clipcleaner_core import atomic, knn_index, neighbours
from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.embed import EmbeddingSet, embed_dataset, embed_texts
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.errors import DataError
from clipcleaner_core.metrics import label_issue_auroc, per_class_table, selection_metrics
from clipcleaner_core.paths import cache_dir
from clipcleaner_core.prompts import PromptSet, prompt_set_for
from clipcleaner_core.schema import decision_effects
from clipcleaner_core.scoring import ScoreFit, ScoringConfig, fit_scores, load_fit, save_fit
from clipcleaner_core.selection import Selection, SelectionConfig, score_table, select

log = logging.getLogger(__name__)

#: progress(stage, done, total, rate): stage is "embed", "text", "fit" (start and end of the fit),
#: or one of the fit's own stages ("probe", "scores", "mixtures"); rate is items/s or None.
Progress = Callable[[str, int, int, "float | None"], None]


@dataclass(frozen=True, eq=False)
class Prepared:
    """Everything :func:`select_samples` needs, computed once per (dataset, encoder, prompts, scoring).

    ``features``, ``labels`` and ``sample_index`` cover only the samples whose image decoded;
    ``sample_index[i]`` is the dataset index of row ``i``.
    """

    dataset: Dataset
    encoder_spec: EncoderSpec
    embedding: EmbeddingSet
    features: np.ndarray
    sample_index: np.ndarray
    labels: np.ndarray
    text_features: np.ndarray | None
    text_labels: np.ndarray | None
    prompts: PromptSet | None
    scoring: ScoringConfig
    fit: ScoreFit
    fit_key: str
    zeroshot_available: bool
    encoder_name: str
    notes: tuple[str, ...] = ()
    other_split_matches: neighbours.SplitMatches | None = None

    @functools.cached_property
    def _checked_split(self) -> dict:
        return {}

    @property
    def split_matches(self) -> neighbours.SplitMatches | None:
        """Each sample's nearest sample in the dataset's other split: from ``prepare(other_split=)``
        or a later :meth:`check_other_split`; None when unchecked."""
        return self._checked_split.get("matches", self.other_split_matches)

    def check_other_split(self, other: Dataset, *, progress: Progress | None = None,
                          cancel: Callable[[], bool] | None = None, allow_download: bool = False
                          ) -> neighbours.SplitMatches:
        """Embed ``other`` (the dataset's other split; cached) and match every sample to its
        nearest sample there; the score tables of this fit then carry ``duplicate_across_splits``."""
        _refuse_the_same_split(self.dataset, other)
        root = Path(self.embedding.folder).parent.parent  # <cache>/embeddings/<key>
        matches = _match_other_split(self.features, other, self.encoder_spec, root, progress,
                                     cancel, allow_download)
        self._checked_split["matches"] = matches
        return matches

    @functools.cached_property
    def sample_paths(self) -> list[str]:
        """Paths of the valid rows, built once (every slider move's score table needs them)."""
        return [self.dataset.paths[i] for i in self.sample_index]

    @functools.cached_property
    def sample_paths_array(self):
        """``sample_paths`` as a pandas string array, built once: every score table reuses it
        without converting 10^6 Python strings again."""
        return pd.array(self.sample_paths, dtype="str")

    @functools.cached_property
    def true_labels(self) -> np.ndarray | None:
        if self.dataset.true_labels is None:
            return None
        return self.dataset.true_labels[self.sample_index]

    @functools.cached_property
    def _auroc_by_scores(self) -> dict:
        return {}

    @functools.cached_property
    def _effects_by_digest(self) -> dict:
        return {}

    def decision_effects(self, decisions: pd.DataFrame | None):
        """What ``decisions`` do to these rows, computed once per distinct set of decisions (they do
        not depend on the thresholds: 100,000 decisions over 10^6 rows then cost nothing per move)."""
        if decisions is None or len(decisions) == 0:
            return decision_effects(self.sample_index, None)
        columns = [c for c in ("index", "decision", "final_label") if c in decisions.columns]
        rows = pd.util.hash_pandas_object(decisions[columns], index=False).to_numpy()
        digest = atomic.hash_array(rows)  # in row order: the latest decision per sample wins
        cache = self._effects_by_digest
        if digest not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[digest] = decision_effects(self.sample_index, decisions)
        return cache[digest]

    def label_issue_auroc(self, enabled: tuple, label_score: np.ndarray) -> float:
        """AUROC of ``label_score`` for finding wrong labels (NaN without ground truth).

        ``label_score`` depends only on which scores are enabled, never on the thresholds, so the
        AUROC (~15 ms at 50k samples) is computed once per set of scores, not on every slider move.
        """
        if self.true_labels is None:
            return float("nan")
        cache = self._auroc_by_scores
        if enabled not in cache:
            cache[enabled] = label_issue_auroc(self.labels, self.true_labels, label_score)
        return cache[enabled]

    def describe(self) -> dict:
        """JSON-serialisable description of the inputs, for sidecars and recipes."""
        return {
            "dataset": {
                "name": self.dataset.name,
                "kind": self.dataset.kind,
                "spec": self.dataset.spec,
                "split": self.dataset.split,
                "fingerprint": self.dataset.fingerprint(),
                "n": len(self.dataset),
                "class_names": list(self.dataset.class_names),
                "noise": self.dataset.noise,
            },
            "encoder": dataclasses.asdict(self.encoder_spec),
            "embedding_key": self.embedding.key,
            "prompts_fingerprint": self.prompts.fingerprint() if self.prompts else None,
            "scoring": dataclasses.asdict(self.scoring),
            "fit_key": self.fit_key,
            "zeroshot_available": self.zeroshot_available,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class Result:
    """A selection applied to a prepared fit: the score table and its metrics."""

    selection: Selection
    table: pd.DataFrame
    metrics: dict
    per_class: pd.DataFrame
    config: SelectionConfig


def prepare(
    dataset: Dataset,
    encoder_spec: EncoderSpec,
    *,
    prompts: PromptSet | None = None,
    scoring: ScoringConfig = ScoringConfig(),
    cache_root: str | Path | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
    allow_download: bool = False,
    other_split: Dataset | None = None,
) -> Prepared:
    """Embed ``dataset`` and fit every score; both steps are cached by content.

    Parameters
    ----------
    dataset
        the labelled dataset.
    encoder_spec
        which encoder to use (``EncoderSpec(model="pixels")`` needs no weights).
    prompts
        prompt ensemble for zero-shot; None picks the built-in set for the dataset.
    scoring
        temperature, probe mode and seed of the fit.
    cache_root
        cache folder (default: :func:`clipcleaner_core.paths.cache_dir`).
    progress
        called as ``progress(stage, done, total, rate)``.
    cancel
        returning True stops the embedding (raises :class:`~clipcleaner_core.errors.Cancelled`).
    allow_download
        let open_clip fetch missing weights (off by default: nothing reaches the
        network unless the user asks).
    other_split
        the dataset's other split (its test split for a training set), embedded
        with the same encoder (cached) to find samples with a near-duplicate on both sides
        (``Prepared.split_matches``; the score table's ``duplicate_across_splits``).

    Examples
    --------
    >>> from clipcleaner_core.data import load_dataset
    >>> from clipcleaner_core.encoders import EncoderSpec
    >>> from clipcleaner_core.pipeline import prepare
    >>> prepared = prepare(load_dataset("demo"), EncoderSpec(model="pixels"))  # cached by content
    >>> len(prepared.fit), prepared.zeroshot_available  # pixels have no text tower: probe scores only
    (1797, False)
    """
    root = Path(cache_root) if cache_root is not None else cache_dir()
    if other_split is not None:  # before any work, not after the fit
        _refuse_the_same_split(dataset, other_split)
    if dataset.kind == "embeddings":
        embedding, text_features, text_labels = _precomputed(dataset, root)
    else:
        embedding = _embed(dataset, encoder_spec, root, progress, cancel, allow_download)
        text_features = text_labels = None
    valid = np.asarray(embedding.valid, dtype=bool)
    sample_index = np.flatnonzero(valid)
    # All rows valid (the usual case): read the cached memmap in place, never a whole copy.
    features = embedding.image_features if valid.all() else np.asarray(embedding.image_features)[valid]
    labels = dataset.labels[valid]
    notes: list[str] = []
    if not valid.all():
        notes.append(f"{int((~valid).sum())} image(s) could not be decoded and were left out; "
                     "see the bad-files table.")

    has_text = bool(embedding.meta.get("has_text", encoder_spec.model != "pixels"))
    used_prompts = None
    if dataset.kind == "embeddings":
        if not has_text:
            notes.append("Zero-shot scores are off: the embeddings folder has no text_features.npy "
                         "(prompt features with text_labels.npy), so only the probe scores are used.")
        elif not scoring.zeroshot:
            text_features = text_labels = None
    elif has_text and scoring.zeroshot:
        used_prompts = prompts if prompts is not None else prompt_set_for(dataset)
        texts, text_labels = used_prompts.prompts_for(dataset.class_names)
        if progress is not None:
            progress("text", 0, len(texts), None)
        text_features = np.asarray(embed_texts(encoder_spec, texts, cache_root=root,
                                               allow_download=allow_download), dtype=np.float32)
    elif not has_text:
        notes.append(f"Zero-shot scores are off: the {encoder_spec.model!r} encoder has no text "
                     "tower, so only the linear-probe scores are used.")
    effective = (scoring if has_text else dataclasses.replace(scoring, zeroshot=False)).resolved(len(labels))

    fit_key = _fit_key(embedding.key, labels, valid, text_features, text_labels, effective)
    fit = _load_or_fit(root, fit_key, features, labels, dataset.num_classes,
                       text_features, text_labels, effective, progress, cancel,
                       knn_key=neighbours.index_key(embedding.key, sample_index))
    _register_dataset(root, dataset)
    matches = None
    if other_split is not None:
        matches = _match_other_split(features, other_split, encoder_spec, root, progress, cancel,
                                     allow_download)
    return Prepared(
        dataset=dataset, encoder_spec=encoder_spec, embedding=embedding, features=features,
        sample_index=sample_index, labels=labels, text_features=text_features,
        text_labels=text_labels, prompts=used_prompts, scoring=effective, fit=fit, fit_key=fit_key,
        zeroshot_available=has_text, encoder_name=str(embedding.meta.get("encoder", encoder_spec.model)),
        notes=tuple(notes), other_split_matches=matches,
    )


def _refuse_the_same_split(dataset: Dataset, other: Dataset) -> None:
    """An image folder without split folders, or a manifest without a split column, loads the
    same images for every split: each sample would be its own duplicate across splits."""
    if other.images is None and Path(other.root).resolve() == Path(dataset.root).resolve() \
            and tuple(other.paths) == tuple(dataset.paths):
        raise DataError(
            f"{dataset.spec or dataset.name} has no separate {other.split} split (asking for it "
            f"loads the same {len(dataset)} images), so there is nothing to check across splits; "
            "put the splits in train/ and test/ folders, or add a 'split' column to the manifest.")


def _match_other_split(features, other, encoder_spec, root, progress, cancel, allow_download):
    """Each sample's nearest sample in ``other`` (embedded with the same encoder, cached); the
    callers have refused an ``other`` that is the same split (:func:`_refuse_the_same_split`)."""
    if other.kind == "embeddings":
        embedding, _, _ = _precomputed(other, root)
    else:
        embedding = _embed(other, encoder_spec, root, progress, cancel, allow_download)
    valid = np.asarray(embedding.valid, dtype=bool)
    other_index = np.flatnonzero(valid)
    other_features = embedding.image_features if valid.all() else np.asarray(embedding.image_features)[valid]
    return neighbours.match_across_splits(
        features, other_features, other_index=other_index, split=other.split,
        key=neighbours.index_key(embedding.key, other_index), cache_root=root, progress=progress,
        cancel=cancel)


def _embed(dataset, encoder_spec, root, progress, cancel, allow_download) -> EmbeddingSet:
    return embed_dataset(
        dataset, encoder_spec, cache_root=root, progress=progress, cancel=cancel,
        allow_download=allow_download,
    )


def _precomputed(dataset: Dataset, root: Path):
    """An :class:`EmbeddingSet` over the features of an ``"embeddings"`` dataset, and its text
    features (None when the folder has none): nothing to embed."""
    from clipcleaner_core.data.embeddings import open_embeddings
    from clipcleaner_core.embed import BAD_FILE_COLUMNS

    opened = open_embeddings(dataset, cache_root=root)
    embedding = EmbeddingSet(
        key=f"pre-{opened.key}", folder=Path(dataset.root), image_features=opened.features,
        valid=np.ones(len(dataset), dtype=bool), bad_files=pd.DataFrame(columns=list(BAD_FILE_COLUMNS)),
        meta={"has_text": opened.text_features is not None, "encoder": "precomputed",
              "reused": True},
    )
    return embedding, opened.text_features, opened.text_labels


def _fit_key(embedding_key, labels, valid, text_features, text_labels, scoring) -> str:
    key = {
        "embedding": embedding_key,
        "labels": atomic.hash_array(labels),
        "valid": atomic.hash_array(valid),
        "text": None if text_features is None else atomic.hash_array(text_features),
        "text_labels": None if text_labels is None else atomic.hash_array(np.asarray(text_labels)),
        "scoring": dataclasses.asdict(scoring),
    }
    if scoring.neighbours and int(np.count_nonzero(valid)) > knn_index.EXACT_MAX_ROWS:
        key["graph_version"] = knn_index.GRAPH_VERSION  # a fit on an older approximate graph is redone
    return atomic.hash_json(key)[:24]


def _load_or_fit(root, fit_key, features, labels, num_classes, text_features, text_labels,
                 scoring, progress, cancel=None, knn_key=None) -> ScoreFit:
    path = root / "fits" / f"{fit_key}.npz"
    if path.exists():
        try:
            return load_fit(path)
        except Exception as exc:  # a damaged cache entry is recomputed, never fatal
            log.warning("refitting: cached fit %s is unreadable or from an older version (%s)", path, exc)
    if progress is not None:
        progress("fit", 0, 1, None)
    start = time.perf_counter()
    knn = None
    if scoring.neighbours and len(labels) > 1:  # the graph is cached per embedding, not per fit
        knn = neighbours.knn_graph(features, k=scoring.neighbours, seed=scoring.seed, key=knn_key,
                                   cache_root=root, progress=progress, cancel=cancel)
    fit = fit_scores(features, labels, num_classes=num_classes, text_features=text_features,
                     text_labels=text_labels, config=scoring, progress=progress, cancel=cancel,
                     knn=knn)
    log.info("fitted scores for %d samples in %.2f s", len(labels), time.perf_counter() - start)
    try:
        save_fit(fit, path)
    except OSError as exc:  # a full or read-only cache costs a refit next time, never this result
        log.warning("could not cache the fit at %s (%s); continuing without the cache", path, exc)
    if progress is not None:
        progress("fit", 1, 1, None)
    return fit


def _register_dataset(root: Path, dataset: Dataset) -> None:
    import sqlite3

    from clipcleaner_core.store import Catalogue

    try:
        Catalogue(root / "catalogue.sqlite").register_dataset(dataset)
    except sqlite3.Error as exc:  # the catalogue is an index; the cached files are the truth
        log.warning("could not record dataset %s in the catalogue: %s", dataset.name, exc)


def effective_selection(prepared: Prepared, config: SelectionConfig) -> SelectionConfig:
    """``config`` with the scores the fit cannot provide switched off.

    Examples
    --------
    >>> from clipcleaner_core.data import load_dataset
    >>> from clipcleaner_core.encoders import EncoderSpec
    >>> from clipcleaner_core.pipeline import effective_selection, prepare
    >>> from clipcleaner_core.selection import SelectionConfig
    >>> prepared = prepare(load_dataset("demo"), EncoderSpec(model="pixels"))  # no text tower
    >>> config = effective_selection(prepared, SelectionConfig())
    >>> config.use_zs_loss, config.use_lr_loss
    (False, True)
    """
    changes = {}
    if not prepared.fit.has_zeroshot:
        changes.update(use_zs_loss=False, use_zs_consistency=False)
    if not prepared.fit.has_probe:
        changes.update(use_lr_loss=False, use_lr_consistency=False)
    if prepared.fit.knn_agreement is None:
        changes.update(use_knn_agreement=False)
    if prepared.fit.lemon_score is None:
        changes.update(use_lemon=False)
    return dataclasses.replace(config, **changes) if changes else config


def select_samples(
    prepared: Prepared,
    config: SelectionConfig = SelectionConfig(),
    *,
    decisions: pd.DataFrame | None = None,
) -> Result:
    """Apply thresholds (and review decisions) to a prepared fit: milliseconds.

    ``decisions`` is a DataFrame(index, decision, final_label) keyed by dataset index, as returned
    by :meth:`clipcleaner_core.store.Catalogue.decisions`.

    Examples
    --------
    >>> from clipcleaner_core.data import load_dataset
    >>> from clipcleaner_core.encoders import EncoderSpec
    >>> from clipcleaner_core.pipeline import prepare, select_samples
    >>> from clipcleaner_core.selection import SelectionConfig
    >>> prepared = prepare(load_dataset("demo"), EncoderSpec(model="pixels"))
    >>> result = select_samples(prepared, SelectionConfig(theta_cons=0.9))
    >>> len(result.table), result.metrics["kept"], round(result.metrics["precision"], 3)  # the demo knows its truth
    (1797, 1079, 0.996)
    """
    config = effective_selection(prepared, config)
    selection = select(prepared.fit, config)
    table = score_table(
        prepared.fit, selection, index=prepared.sample_index, paths=prepared.sample_paths_array,
        true_labels=prepared.true_labels, effects=prepared.decision_effects(decisions),
        split_matches=prepared.split_matches,
    )
    clean_mask = table["is_clean"].to_numpy(dtype=bool)
    metrics = selection_metrics(clean_mask, prepared.labels, prepared.true_labels)
    if prepared.true_labels is not None:
        metrics["auroc"] = prepared.label_issue_auroc(selection.enabled, table["label_score"].to_numpy())
    per_class = per_class_table(clean_mask, prepared.labels, prepared.true_labels,
                                num_classes=prepared.dataset.num_classes)
    names = np.asarray(prepared.dataset.class_names, dtype=object)
    per_class.insert(1, "class_name", names[per_class["class"].to_numpy(dtype=int)])
    return Result(selection=selection, table=table, metrics=metrics, per_class=per_class,
                  config=config)
