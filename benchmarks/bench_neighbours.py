"""Neighbour evidence against the paper's rule and cleanlab, on data with known truth; and the
kNN index's speed and recall.

Quality (``--quality``, the default): for each case, AUROC of ``label_score`` for finding wrong
labels and F1 of the clean set for

* ``paper``: the CLIPCleaner rule (``SelectionConfig()``: the in-sample probe, plus zero-shot when
  the case has text features);
* ``paper + neighbours``: the ``"paper + neighbours"`` preset (adds the trusted kNN label agreement,
  and the LEMoN-style score when text features exist); its ``label_score`` is the mean of the
  enabled scores, the neighbour ones together counting as one (``label_score_weights``);
* ablations: ``paper, majority``: the paper's scores under the preset's majority rule without the
  neighbour scores (what the neighbours add, beyond the change of rule); ``plain kNN vote``: the
  preset with the kNN agreement of every neighbour counted alike (what the trust adds);
* ``cleanlab``: ``cleanlab.filter.find_label_issues`` (prune_by_noise_rate) on 5-fold
  out-of-sample probabilities of scikit-learn's balanced logistic regression, AUROC from
  ``cleanlab.rank.get_label_quality_scores`` (needs ``pip install cleanlab``: benchmark only).

Cases: the demo (``clean("demo")``: digits, pixels encoder, sym 0.4), scikit-learn digits with
sym 0.2 and pairwise asymmetric 0.4 noise, texture patches cut from the photographs that ship
inside scikit-image (``pip install scikit-image``: benchmark only; 12 photographs = classes,
HOG + intensity-histogram features) with sym 0.4 and pairwise asym 0.3 noise, and a seeded
synthetic problem with text features (the only case where LEMoN can run offline: no CLIP weights).

Index (``--index N``): exact vs approximate kNN graph build time and recall at k = 10 on N x 512
clustered unit vectors (float16 memory map, as the embedding cache stores them), and the time of
one query.

Index on real features (``--features F.npy --n N``): the faiss index over the first N rows of an
(M, D) ``.npy`` of L2-normalised embeddings (read as a memory map), built in memory as the app
builds it: build time, one-query latency, recall at k = 10 of 1,000 held-out queries against exact
search at several ``nprobe``, the kNN graph's time and recall, and the peak RSS.

    python benchmarks/bench_neighbours.py                # quality table (~2 min)
    python benchmarks/bench_neighbours.py --index 200000 # index speed / recall
    python benchmarks/bench_neighbours.py --features features.npy --n 1000000
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses  # noqa: E402

from clipcleaner_core import knn_index, neighbours  # noqa: E402
from clipcleaner_core.metrics import label_issue_auroc, make_synthetic_problem, selection_metrics  # noqa: E402
from clipcleaner_core.scoring import ScoringConfig, fit_scores  # noqa: E402
from clipcleaner_core.selection import SelectionConfig, select  # noqa: E402

DIGIT_PAIRS = ((7, 1), (1, 7), (3, 8), (5, 6), (4, 9), (2, 7))
TEXTURE_IMAGES = ("brick", "grass", "gravel", "coins", "text", "moon", "camera", "coffee",
                  "chelsea", "hubble_deep_field", "page", "rocket")


# ---- cases --------------------------------------------------------------------------------------
def demo_case(cache: Path) -> dict:
    """The demo exactly as ``clean("demo")`` prepares it (pixels encoder, sym 0.4)."""
    from clipcleaner_core.data import load_demo
    from clipcleaner_core.encoders import EncoderSpec
    from clipcleaner_core.pipeline import prepare

    prepared = prepare(load_demo(), EncoderSpec(model="pixels"), cache_root=cache)
    return {"features": np.asarray(prepared.features, dtype=np.float32), "labels": prepared.labels,
            "true": prepared.true_labels, "k": 10}


def digit_features(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    from clipcleaner_core.data import load_demo
    from clipcleaner_core.encoders import EncoderSpec
    from clipcleaner_core.pipeline import prepare

    prepared = prepare(load_demo(noise_rate=0), EncoderSpec(model="pixels"), cache_root=cache)
    return np.asarray(prepared.features, dtype=np.float32), prepared.labels


def pair_noise(true: np.ndarray, pairs, rate: float, seed: int) -> np.ndarray:
    """Flip round(rate * n_c) samples of each source class c to its paired class."""
    rng = np.random.default_rng(seed)
    noisy = true.copy()
    for source, target in pairs:
        members = np.flatnonzero(true == source)
        noisy[rng.choice(members, size=int(round(rate * members.size)), replace=False)] = target
    return noisy


def texture_patches(per_class: int = 150, size: int = 32, seed: int = 0):
    """(N, size, size) float patches cut at seeded random places from scikit-image's bundled
    photographs; the class of a patch is the photograph it came from."""
    from skimage import color, data, transform

    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for k, name in enumerate(TEXTURE_IMAGES):
        image = getattr(data, name)()
        gray = color.rgb2gray(image[..., :3]) if image.ndim == 3 else image.astype(float)
        gray = gray / max(gray.max(), 1e-9)
        if min(gray.shape) > 384:
            gray = transform.rescale(gray, 384 / min(gray.shape), anti_aliasing=True)
        ys = rng.integers(0, gray.shape[0] - size, per_class)
        xs = rng.integers(0, gray.shape[1] - size, per_class)
        patches.extend(gray[y:y + size, x:x + size] for y, x in zip(ys, xs))
        labels.extend([k] * per_class)
    return np.stack(patches), np.asarray(labels, dtype=np.int64)


def texture_features(patches: np.ndarray) -> np.ndarray:
    """HOG (8-px cells) + a 16-bin intensity histogram per patch, centred and L2-normalised."""
    from skimage.feature import hog

    rows = []
    for patch in patches:
        h = hog(patch, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
        hist = np.histogram(patch, bins=16, range=(0, 1))[0] / patch.size
        rows.append(np.concatenate([h, 2.0 * hist]))
    features = np.asarray(rows)
    features -= features.mean(axis=0)
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)


def cases(cache: Path, synthetic_seeds: int = 1) -> dict:
    out = {"demo (digits, sym 0.4)": demo_case(cache)}
    features, true = digit_features(cache)
    from clipcleaner_core.data.noise import symmetric_noise

    out["digits sym 0.2"] = {"features": features, "true": true, "k": 10,
                             "labels": symmetric_noise(true, 10, 0.2, seed=1)}
    out["digits asym 0.4"] = {"features": features, "true": true, "k": 10,
                              "labels": pair_noise(true, DIGIT_PAIRS, 0.4, seed=1)}
    try:
        patches, tex_true = texture_patches()
    except ImportError:
        logging.warning("scikit-image is not installed: skipping the texture cases")
    else:
        tex = texture_features(patches)
        k = len(TEXTURE_IMAGES)
        out["textures sym 0.4"] = {"features": tex, "true": tex_true, "k": k,
                                   "labels": symmetric_noise(tex_true, k, 0.4, seed=2)}
        pairs = tuple((c, (c + 1) % k) for c in range(k))
        out["textures asym 0.3"] = {"features": tex, "true": tex_true, "k": k,
                                    "labels": pair_noise(tex_true, pairs, 0.3, seed=2)}
    for seed in range(synthetic_seeds):  # --synthetic-seeds: the same problem drawn again
        p = make_synthetic_problem(3000, 10, 64, noise_rate=0.4, spread=2.0, seed=seed)
        name = "synthetic + text, sym 0.4" + (f", seed {seed}" if seed else "")
        out[name] = {"features": p["features"], "true": p["true_labels"], "k": 10,
                     "labels": p["labels"], "text": p["text_features"], "text_labels": p["text_labels"]}
    return out


# ---- methods ------------------------------------------------------------------------------------
def ours(case: dict, config: SelectionConfig, *, plain_vote: bool = False) -> tuple[float, float]:
    if "fit" not in case:
        case["fit"] = fit_scores(case["features"], case["labels"], num_classes=case["k"],
                                 text_features=case.get("text"), text_labels=case.get("text_labels"),
                                 config=ScoringConfig(zeroshot="text" in case))
    fit = case["fit"]
    if plain_vote:  # the fit's kNN agreement without the trust in each neighbour's label
        fit = dataclasses.replace(fit, knn_agreement=neighbours.knn_agreement(fit.knn, fit.labels))
    selection = select(fit, config)
    f1 = selection_metrics(selection.clean_mask, case["labels"], case["true"])["f1"]
    return f1, label_issue_auroc(case["labels"], case["true"], selection.label_score)


def cleanlab_baseline(case: dict, seed: int = 0) -> tuple[float, float]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    model = LogisticRegression(class_weight="balanced", max_iter=2000)
    probs = cross_val_predict(model, case["features"], case["labels"], cv=folds, method="predict_proba")
    issues = find_label_issues(case["labels"], probs)
    f1 = selection_metrics(~issues, case["labels"], case["true"])["f1"]
    quality = get_label_quality_scores(case["labels"], probs)
    return f1, label_issue_auroc(case["labels"], case["true"], quality)


def quality_table(cache: Path, synthetic_seeds: int = 1) -> list[dict]:
    rows = []
    paper, with_neighbours = SelectionConfig(), SelectionConfig.from_preset("paper + neighbours")
    for name, case in cases(cache, synthetic_seeds).items():
        started = time.perf_counter()
        results = {"paper": ours(case, paper), "paper + neighbours": ours(case, with_neighbours),
                   "paper, majority": ours(case, SelectionConfig(combine="majority")),
                   "plain kNN vote": ours(case, with_neighbours, plain_vote=True)}
        try:
            results["cleanlab"] = cleanlab_baseline(case)
        except ImportError:
            results["cleanlab"] = (float("nan"), float("nan"))
        flip = float(np.mean(case["labels"] != case["true"]))
        rows.append({"case": name, "n": case["labels"].size, "flip": flip, **results,
                     "seconds": time.perf_counter() - started})
    return rows


def print_quality(rows: list[dict]) -> None:
    methods = ("paper", "paper + neighbours", "cleanlab", "paper, majority", "plain kNN vote")
    print(f"{'case':36} {'N':>5} {'flip':>5}  " + "  ".join(f"{m + ' F1':>21} {'AUROC':>8}" for m in methods))
    wins = 0
    for row in rows:
        cells = "  ".join(f"{row[m][0]:>21.4f} {row[m][1]:>8.6f}" for m in methods)
        ours_f1, ours_auc = row["paper + neighbours"]
        best = all(ours_f1 > row[m][0] and ours_auc > row[m][1] for m in ("paper", "cleanlab")
                   if np.isfinite(row[m][0]))
        wins += best
        print(f"{row['case']:36} {row['n']:>5} {row['flip']:>5.2f}  {cells}  {'target met' if best else 'TARGET MISSED'}")
    print(f"paper + neighbours above both others in F1 and AUROC: {wins} of {len(rows)} cases "
          "(ablations: 'paper, majority': the paper's scores under the majority rule, no neighbours; "
          "'plain kNN vote': the preset with every neighbour's vote counted alike)")


# ---- index --------------------------------------------------------------------------------------
def clustered_memmap(path: Path, n: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    """(n, dim) float16 unit vectors around 1,000 centres with a shared direction (CLIP-like),
    written chunk by chunk to a memory map."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    shared = 3.0 * rng.standard_normal(dim).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for lo in range(0, n, 65536):
        hi = min(n, lo + 65536)
        rows = centres[rng.integers(0, 1000, hi - lo)] + shared
        rows += 0.9 * rng.standard_normal((hi - lo, dim)).astype(np.float32)
        out[lo:hi] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out.flush()
    return np.load(path, mmap_mode="r")


def exact_top(features: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """(M, k) exact top-k rows of ``features`` per query, reading ``features`` chunk by chunk (the
    ground truth for the recall, without a float32 copy of all of it)."""
    best_sims = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((queries.shape[0], 0), dtype=np.int64)
    for lo in range(0, features.shape[0], chunk):
        block = np.asarray(features[lo:lo + chunk], dtype=np.float32)
        rows, sims = knn_index._exact_search(block, queries, min(k, block.shape[0]))
        best_sims = np.hstack([best_sims, sims])
        best_rows = np.hstack([best_rows, rows.astype(np.int64) + lo])
        keep = np.argsort(-best_sims, axis=1, kind="stable")[:, :k]
        best_sims = np.take_along_axis(best_sims, keep, axis=1)
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
    return best_rows


def index_benchmark(n: int, folder: Path, n_check: int = 500) -> None:
    features = clustered_memmap(folder / "features.npy", n)
    rng = np.random.default_rng(1)
    probe = np.sort(rng.choice(n, size=min(n_check, n), replace=False))
    started = time.perf_counter()
    index = neighbours.neighbour_index(features, key=f"bench-{n}", cache_root=folder, method="approximate")
    built = time.perf_counter() - started
    started = time.perf_counter()
    graph = index.graph(10)
    graphed = time.perf_counter() - started
    queries = np.asarray(features[probe], dtype=np.float32)
    truth = [set(row[row != i][:10]) for row, i in zip(exact_top(features, queries, 11), probe)]
    recall = np.mean([len(t & set(graph.indices[i])) / 10 for t, i in zip(truth, probe)])
    timings = []
    for query in queries[:50]:
        t0 = time.perf_counter()
        index.search(query[None, :], 10)
        timings.append(time.perf_counter() - t0)
    started = time.perf_counter()
    neighbours.neighbour_index(features, key=f"bench-{n}", cache_root=folder, method="approximate").graph(10)
    reloaded = time.perf_counter() - started
    print(f"N={n:,} x 512 (float16 memmap), faiss IVF-Flat {knn_index._n_lists(n)} lists, "
          f"nprobe {knn_index._n_probe(knn_index._n_lists(n))}: build {built:.1f} s, kNN graph (k=10) {graphed:.1f} s, "
          f"recall@10 vs exact ({len(probe)} rows) {recall:.4f}, one query median "
          f"{1e3 * np.median(timings):.2f} ms, reload from the cache {reloaded:.2f} s")
    small = np.asarray(features[:min(n, 20_000)], dtype=np.float32)
    started = time.perf_counter()
    neighbours.NeighbourIndex(small, method="exact").graph(10)
    print(f"exact kNN graph at N={small.shape[0]:,}: {time.perf_counter() - started:.1f} s")


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def features_index_benchmark(path: Path, n: int, n_queries: int = 1000, k: int = 10,
                             graph: bool = True) -> None:
    """The faiss index over the first ``n`` rows of ``path`` (see the module doc)."""
    features = np.load(path, mmap_mode="r")
    total = features.shape[0]
    n = min(n, total)
    base = features[:n]
    rng = np.random.default_rng(0)  # queries: held-out rows past n if there are any, else rows of the base
    pool = np.arange(n, total) if total - n >= n_queries else np.arange(n)
    query_rows = np.sort(rng.choice(pool, size=n_queries, replace=False))
    queries = np.asarray(features[query_rows], dtype=np.float32)
    print(f"{path.name}: N={n:,} x {base.shape[1]} ({base.dtype}), {n_queries} queries "
          f"({'held out' if pool[0] >= n else 'from the base'})", flush=True)
    started = time.perf_counter()
    index = neighbours.NeighbourIndex(base, method="approximate").build()
    built = time.perf_counter() - started
    print(f"build (IVF-Flat, {knn_index._n_lists(n)} lists, trained on "
          f"{min(n, knn_index._n_lists(n) * knn_index.TRAIN_PER_LIST):,} rows): {built:.1f} s, "
          f"peak RSS {peak_rss_gb():.2f} GB", flush=True)
    started = time.perf_counter()
    truth = exact_top(base, queries, k)
    print(f"exact top-{k} of the queries: {time.perf_counter() - started:.1f} s", flush=True)
    faiss_index = index._faiss
    default = knn_index._n_probe(faiss_index.nlist)
    for nprobe in sorted({16, knn_index.N_PROBE, 64, 128, default, 2 * default}):
        faiss_index.nprobe = min(nprobe, faiss_index.nlist)
        found, _ = index.search(queries, k)
        timings = []
        for query in queries[:200]:
            t0 = time.perf_counter()
            index.search(query[None, :], k)
            timings.append(time.perf_counter() - t0)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])
        print(f"  nprobe {nprobe:>3}: recall@{k} {recall:.4f}, one query median "
              f"{1e3 * np.median(timings):.2f} ms (p95 {1e3 * np.percentile(timings, 95):.2f} ms), "
              f"batch of {n_queries} {1e3 * _timed(index.search, queries, k):.0f} ms"
              f"{'  <- the default' if nprobe == default else ''}", flush=True)
    faiss_index.nprobe = knn_index._n_probe(faiss_index.nlist)
    if graph:
        started = time.perf_counter()
        knn = index.graph(k)
        graphed = time.perf_counter() - started
        check = np.sort(rng.choice(n, size=n_queries, replace=False))
        rows = np.asarray(base[check], dtype=np.float32)
        exact = [row[row != i][:k] for row, i in zip(exact_top(base, rows, k + 1), check)]
        recall = np.mean([len(set(t) & set(knn.indices[i])) / k for t, i in zip(exact, check)])
        print(f"kNN graph (k={k}, every row): {graphed:.1f} s, recall@{k} on {n_queries} rows "
              f"{recall:.4f}", flush=True)
    print(f"peak RSS {peak_rss_gb():.2f} GB", flush=True)


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=int, default=0, help="benchmark the index at this N instead")
    parser.add_argument("--features", type=Path, default=None, metavar="F.npy",
                        help="benchmark the index on the first --n rows of these features")
    parser.add_argument("--n", type=int, default=1_000_000, help="rows of --features to index")
    parser.add_argument("--no-graph", action="store_true", help="--features: skip the kNN graph")
    parser.add_argument("--synthetic-seeds", type=int, default=1, metavar="S",
                        help="quality: draw the synthetic case with seeds 0..S-1 (its margins are small)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.features is not None:
        features_index_benchmark(args.features, args.n, graph=not args.no_graph)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.index:
            index_benchmark(args.index, Path(tmp))
        else:
            print_quality(quality_table(Path(tmp), args.synthetic_seeds))


if __name__ == "__main__":
    main()
