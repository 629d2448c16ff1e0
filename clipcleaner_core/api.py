"""The one-call API: :func:`find_label_issues` over arrays, :func:`clean` over files.

``find_label_issues`` is what the CLI's ``select`` runs and ``clean`` what its ``run`` runs, so a
selection made in a script, on the command line or in the app is the same selection.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .progress import Progress
from .scoring import AUTO_NEIGHBOURS, ScoringConfig, fit_scores
from .schema import PAPER_SCORE_NAMES, SCORES
from .selection import SCORE_NAMES, SelectionConfig, score_table, select
from .validation import check_labels

#: in ``scores``: every paper score the inputs provide
PAPER_SCORES = "paper"
NEIGHBOUR_SCORE_NAMES = tuple(score.name for score in SCORES if score.family == "nb")


def find_label_issues(
    image_features: np.ndarray,
    labels,
    *,
    text_features: np.ndarray | None = None,
    text_labels: np.ndarray | None = None,
    class_names: Iterable[str] | None = None,
    theta_gmm: float = 0.5,
    theta_cons: float = 0.8,
    temperature: float = 0.07,
    probe: str = "in-sample",
    scores: Iterable[str] | None = None,
    neighbours: int | None = None,
    theta_knn: float = 0.5,
    combine: str = "all",
    other_split_features: np.ndarray | None = None,
    seed: int = 0,
    true_labels=None,
    progress: Progress | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Score every sample with the CLIPCleaner rule and return the score table.

    Zero-shot scores are on exactly when ``text_features`` are given; the probe unless
    ``probe="off"``. The number of classes comes from ``class_names``, else from the largest label
    in ``labels`` and ``text_labels``.

    Parameters
    ----------
    image_features : (N, D) float array
        L2-normalised image embeddings, one row per sample (float16 or float32; a read-only
        ``np.memmap`` is read in row chunks, never copied whole).
    labels : (N,) array of int class ids 0..K-1, or of class names when ``class_names`` is given
        The given (possibly wrong) labels.
    text_features : (M, D) float array, optional
        L2-normalised embeddings of the prompts; needs ``text_labels``.
    text_labels : (M,) int array, optional
        The class of each prompt row; every class needs at least one prompt.
    class_names : sequence of K str, optional
        Class names; label ``k`` means ``class_names[k]``.
    theta_gmm : float in [0, 1]
        A sample passes a loss score when its clean probability is >= theta_gmm.
    theta_cons : float in [0, 1]
        A sample passes a consistency score when p[y] / max p is >= theta_cons.
    temperature : float > 0
        Zero-shot softmax temperature tau.
    probe : {"in-sample", "cross-val", "off"}
        The linear probe: fitted and predicted on all samples (the paper), 5-fold out-of-sample,
        or not at all.
    scores : iterable of str, optional
        Which of ``"zs_loss", "zs_consistency", "lr_loss", "lr_consistency"`` (the paper) and
        ``"knn_agreement", "lemon"`` (neighbour evidence; ``"lemon"`` needs text features) take
        part (default: every paper score the inputs provide). ``scores=("paper", "knn_agreement",
        "lemon")``: ``"paper"`` stands for every paper score the inputs provide.
    neighbours : int, optional
        k of the neighbour evidence (0 = none). Default: 10 where the exact kNN graph is cheap
        (up to 20,000 samples) or when a neighbour score is named in ``scores``, else none.
    theta_knn : float in [0, 1]
        A sample passes the kNN agreement when it is >= theta_knn.
    combine : {"all", "majority"}
        Keep a sample that passes every enabled score (the paper) or at least half of them.
    other_split_features : (M, D) float array, optional
        Image features of the dataset's other split (e.g. its test set, same encoder): fills
        ``duplicate_across_splits`` (a near-duplicate, cosine >= 0.98, on the other side) and
        ``cross_split_match`` (that sample's row in ``other_split_features``, -1 where none).
    seed : int
        Seed of the cross-val folds.
    true_labels : (N,) int array, optional
        Known correct labels (benchmarks); adds ``true_label`` and ``is_noisy`` columns.
    progress : callable, optional
        ``progress(stage, done, total, rate)``.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Where the fit's products run: a CUDA GPU when torch sees one ("auto"), else NumPy on
        the CPU; the selection is the same up to float rounding.

    Returns
    -------
    pandas.DataFrame
        One row per sample, the columns of ``selection.TABLE_COLUMNS``: ``label_score`` in
        [0, 1] (higher = more likely correct), ``is_label_issue`` (True = flagged),
        ``is_clean = not is_label_issue``, ``suggested_label`` and each score.

    Examples
    --------
    >>> from clipcleaner_core import find_label_issues
    >>> from clipcleaner_core.metrics import make_synthetic_problem
    >>> p = make_synthetic_problem(600, 3, 16, noise_rate=0.3, spread=1.0, seed=0)
    >>> table = find_label_issues(p["features"], p["labels"], text_features=p["text_features"],
    ...                           text_labels=p["text_labels"])
    >>> len(table), bool(table["label_score"].between(0, 1).all())
    (600, True)
    >>> flagged = table["is_label_issue"].to_numpy()
    >>> wrong = p["labels"] != p["true_labels"]
    >>> int(wrong.sum()), int((flagged & wrong).sum())  # every wrong label is flagged
    (105, 105)
    """
    names = None if class_names is None else tuple(str(c) for c in class_names)
    labels = _label_ids(labels, names)
    if text_features is not None and text_labels is None:
        raise DataError("text_features need text_labels: the class of each prompt row.")
    text_ids = None if text_labels is None else check_labels(text_labels, name="text_labels")
    if names is not None:
        num_classes = len(names)
    else:
        num_classes = int(max(labels.max(), -1 if text_ids is None else text_ids.max())) + 1
    scoring = ScoringConfig(temperature=temperature, zeroshot=text_features is not None,
                            probe=probe, seed=seed, neighbours=neighbours)
    selection_config = selection_from_scores(theta_gmm, theta_cons, scores, scoring,
                                         theta_knn=theta_knn, combine=combine)
    scoring = with_neighbours_for(selection_config, scoring)
    fit = fit_scores(image_features, labels, num_classes=num_classes,
                     text_features=text_features, text_labels=text_ids, config=scoring,
                     progress=progress, device=device)
    selection = select(fit, selection_config)
    truth = None if true_labels is None else check_labels(true_labels, name="true_labels",
                                                            num_classes=num_classes)
    matches = None
    if other_split_features is not None:
        from .neighbours import match_across_splits

        matches = match_across_splits(image_features, other_split_features)
    return score_table(fit, selection, true_labels=truth, split_matches=matches)


def _label_ids(labels, names) -> np.ndarray:
    array = np.asarray(labels)
    if names is not None and array.dtype.kind in "OUS":
        lookup = {name: i for i, name in enumerate(names)}
        unknown = sorted({str(v) for v in array.ravel()} - set(lookup))
        if unknown:
            raise DataError(f"labels {unknown[:5]} are not in class_names; valid names: "
                            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}.")
        return np.asarray([lookup[str(v)] for v in array.ravel()], dtype=np.int64)
    return check_labels(array, name="labels",
                        num_classes=None if names is None else len(names))


def selection_from_scores(theta_gmm, theta_cons, scores, scoring: ScoringConfig, *,
                          theta_knn: float = 0.5, combine: str = "all") -> SelectionConfig:
    """The SelectionConfig of :func:`find_label_issues`'s arguments: ``scores`` names the scores
    that take part (None: every paper score ``scoring`` provides; ``"paper"`` inside it stands for
    them); an unknown name, or one ``scoring`` cannot provide, raises a ConfigError naming the
    valid ones."""
    provided = {name for name in SCORE_NAMES
                if (scoring.zeroshot if name.startswith("zs") else
                    scoring.probe != "off" if name.startswith("lr") else
                    scoring.zeroshot or name != "lemon")}
    if scores is None:  # the paper's rule: neighbour scores only when named
        chosen = provided & set(PAPER_SCORE_NAMES)
    else:
        chosen = set(scores)
        if PAPER_SCORES in chosen:
            chosen = (chosen - {PAPER_SCORES}) | (provided & set(PAPER_SCORE_NAMES))
        unknown = sorted(chosen - set(SCORE_NAMES))
        if unknown:
            raise ConfigError(f"unknown scores {unknown}; valid scores: {PAPER_SCORES} (all of the "
                              f"paper's), {', '.join(SCORE_NAMES)}.")
        missing = sorted(chosen - provided)
        if missing:
            raise ConfigError(f"scores {missing} need {'the probe' if missing[0].startswith('lr') else 'text_features'}"
                              f"; the inputs provide {sorted(provided)}.")
    if scoring.neighbours == 0 and chosen & set(NEIGHBOUR_SCORE_NAMES):
        raise ConfigError(f"scores {sorted(chosen & set(NEIGHBOUR_SCORE_NAMES))} need the neighbour "
                          "evidence; pass neighbours=k (k >= 1) or leave it unset.")
    return SelectionConfig(theta_gmm=theta_gmm, theta_cons=theta_cons, theta_knn=theta_knn,
                           combine=combine,
                           **{f"use_{name}": name in chosen for name in SCORE_NAMES})


def with_neighbours_for(selection: SelectionConfig, scoring: ScoringConfig) -> ScoringConfig:
    """``scoring`` with k of the neighbour evidence set when a neighbour score is asked for and
    k was left to the default (which computes none above the exact-search limit)."""
    asked = any(getattr(selection, f"use_{name}") for name in NEIGHBOUR_SCORE_NAMES)
    if asked and scoring.neighbours is None:
        return dataclasses.replace(scoring, neighbours=AUTO_NEIGHBOURS)
    return scoring


def clean(
    data: str | Path = "demo",
    *,
    model: str = "pixels",
    pretrained: str | None = None,
    noise: str | None = None,
    noise_seed: int = 0,
    data_format: str | None = None,
    split: str = "train",
    prompts: str | Path | None = None,
    temperature: float = 0.07,
    probe: str = "in-sample",
    seed: int = 0,
    device: str = "auto",
    allow_download: bool = False,
    cache_root: str | Path | None = None,
    progress: Progress | None = None,
    theta_gmm: float = 0.5,
    theta_cons: float = 0.8,
    scores: Iterable[str] | None = None,
    neighbours: int | None = None,
    theta_knn: float = 0.5,
    combine: str = "all",
):
    """Embed a dataset, score it and select its clean samples: the CLI's ``run`` in one call.

    Parameters
    ----------
    data : str or path
        ``"demo"``, an ImageFolder tree, a CSV/Parquet manifest, a CIFAR folder, one of the paper's
        dataset layouts, or a folder of precomputed embeddings.
    model, pretrained : str
        The encoder: ``"pixels"`` (no weights, no zero-shot) or an open_clip model name with a
        pretrained tag or a local checkpoint path.
    noise : str, optional
        Synthetic label noise to inject first, e.g. ``"sym:0.4"`` (seeded by ``noise_seed``).
    theta_gmm, theta_cons, temperature, probe, seed, scores, neighbours, theta_knn, combine
        As in :func:`find_label_issues` (zero-shot scores count as provided unless the model is
        ``"pixels"``; scores the fit cannot provide are skipped).
    allow_download : bool
        Let open_clip fetch missing weights (nothing reaches the network otherwise).

    Returns
    -------
    clipcleaner_core.pipeline.Result
        ``table`` (the score table), ``metrics`` (precision / recall / F1 / AUROC when the truth is
        known), ``per_class`` and the ``selection``.

    Examples
    --------
    >>> from clipcleaner_core import clean
    >>> result = clean("demo", theta_cons=0.8)                          # doctest: +SKIP
    >>> round(result.metrics["f1"], 2)                                  # doctest: +SKIP
    0.96
    """
    from .data import apply_noise, load_dataset
    from .data.noise import parse_noise_spec
    from .encoders import EncoderSpec
    from .pipeline import prepare, select_samples
    from .prompts import load_prompt_set

    dataset = load_dataset(data, format=data_format, split=split)
    if noise:
        dataset = apply_noise(dataset, dataclasses.replace(parse_noise_spec(noise), seed=noise_seed))
    scoring = ScoringConfig(temperature=temperature, probe=probe, seed=seed, neighbours=neighbours)
    selection = selection_from_scores(theta_gmm, theta_cons, scores,
                                  dataclasses.replace(scoring, zeroshot=model != "pixels"),
                                  theta_knn=theta_knn, combine=combine)
    scoring = with_neighbours_for(selection, scoring)
    prepared = prepare(
        dataset, EncoderSpec(model=model, pretrained=pretrained, device=device),
        prompts=load_prompt_set(prompts) if prompts else None, scoring=scoring,
        cache_root=cache_root, progress=progress, allow_download=allow_download,
    )
    return select_samples(prepared, selection)
