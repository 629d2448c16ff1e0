"""What Tune, Inspect and Export do per action at ImageNet scale (1,281,167 rows, 1,000 classes).

The fit is synthetic (random per-sample scores of the right shapes and ranges; ``bench_scale.py``
measures the fit itself), so this isolates the per-action work: a slider move (``select_samples``:
thresholds + score table + metrics), Inspect's filter + sort + one page, folding 100,000 review
decisions in, and a CSV / Parquet export of the whole table. Prints median ms per action and the
process's peak RSS.

    python benchmarks/bench_table_scale.py [--n 1281167] [--classes 1000] [--decisions 100000]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clipcleaner_core.data.dataset import Dataset, empty_bad_files
from clipcleaner_core.embed import EmbeddingSet
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.export import export
from clipcleaner_core.gmm import fit_mixtures, mixture_posterior
from clipcleaner_core.pipeline import Prepared, select_samples
from clipcleaner_core.scoring import TOP_K, ScoreFit, ScoringConfig
from clipcleaner_core.selection import SelectionConfig


def synthetic_prepared(n: int, k: int, seed: int = 0) -> Prepared:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), true)
    wrong = labels != true
    parts = {}
    for prefix in ("zs", "lr"):
        loss = np.clip(rng.beta(5, 2, n) - 0.5 * wrong, 0, 1)
        parts[f"{prefix}_loss_score"] = loss
        parts[f"{prefix}_consistency"] = np.clip(rng.beta(4, 1, n) - 0.6 * wrong, 1e-6, 1)
        parts[f"{prefix}_clean_prob"] = mixture_posterior(loss, labels, fit_mixtures(loss, labels, num_classes=k))
        top = rng.integers(0, k, (n, TOP_K)).astype(np.int32)
        top[:, 0] = true
        parts[f"{prefix}_top_classes"] = top
        parts[f"{prefix}_top_probs"] = np.sort(rng.random((n, TOP_K)).astype(np.float32), axis=1)[:, ::-1]
    parts["suggested_both"] = true.astype(np.int32)
    fit = ScoreFit(config=ScoringConfig(), num_classes=k, labels=labels, **parts)
    dataset = Dataset(name="bench", kind="embeddings", root=Path("."),
                      class_names=tuple(f"n{c:08d}" for c in range(k)), labels=labels,
                      paths=tuple(f"train/n{label:08d}/{i:08d}.JPEG" for i, label in enumerate(true)),
                      true_labels=true, content_id="bench")
    embedding = EmbeddingSet(key="bench", folder=Path("."), image_features=np.zeros((n, 1), np.float16),
                             valid=np.ones(n, bool), bad_files=empty_bad_files(), meta={})
    return Prepared(dataset=dataset, encoder_spec=EncoderSpec(model="pixels"), embedding=embedding,
                    features=embedding.image_features, sample_index=np.arange(n), labels=labels,
                    text_features=None, text_labels=None, prompts=None, scoring=fit.config, fit=fit,
                    fit_key="bench", zeroshot_available=True, encoder_name="synthetic")


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, out


def inspect_page(table: pd.DataFrame, classes: np.ndarray, page: int, size: int = 24) -> pd.DataFrame:
    """Inspect's work for one view: flagged samples of some given classes, worst first, one page."""
    keep = table["is_label_issue"].to_numpy() & np.isin(table["given_label"].to_numpy(), classes)
    rows = np.flatnonzero(keep)
    order = rows[np.argsort(table["label_score"].to_numpy()[rows], kind="stable")]
    return table.iloc[order[page * size:(page + 1) * size]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_281_167)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    prepared = synthetic_prepared(args.n, args.classes)
    print(f"synthetic fit of {args.n:,} x {args.classes:,}: {time.perf_counter() - start:.1f} s")
    _ = prepared.sample_paths
    settings = iter([SelectionConfig(theta_cons=c) for c in np.linspace(0.5, 0.95, 50)])
    ms, result = timed(lambda: select_samples(prepared, next(settings)), args.repeats)
    print(f"slider move (select_samples, score table of {args.n:,} rows): {ms:.0f} ms median")
    rng = np.random.default_rng(1)
    ms, _ = timed(lambda: inspect_page(result.table, rng.choice(args.classes, 20), 3), args.repeats)
    print(f"Inspect filter + sort + page: {ms:.0f} ms median")
    index = rng.choice(args.n, args.decisions, replace=False)
    decisions = pd.DataFrame({"index": index,
                              "decision": rng.choice(["keep", "drop", "relabel"], args.decisions),
                              "final_label": rng.integers(0, args.classes, args.decisions)})
    ms, with_decisions = timed(lambda: select_samples(prepared, SelectionConfig(), decisions=decisions),
                               args.repeats)
    print(f"slider move with {args.decisions:,} review decisions: {ms:.0f} ms median")
    with tempfile.TemporaryDirectory() as folder:
        for fmt, name in (("csv", "scores.csv"), ("parquet", "scores.parquet")):
            start = time.perf_counter()
            export(with_decisions.table, fmt, Path(folder) / name)
            size = (Path(folder) / name).stat().st_size / 2**20
            print(f"export {fmt}: {time.perf_counter() - start:.1f} s, {size:.0f} MB")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
