"""Map layout at scale: the sampled UMAP layout vs umap-learn's full fit, same features, same process.

CLIP-like synthetic features (power-law spectrum, one shared "cone" direction, class clusters,
L2-normalised; the generator of ``bench_scale.py``) are written to an .npy file and memory-mapped,
as the app's embeddings are (``--features`` opens an existing (N, D) .npy instead). Then, in this
process:

1. a warm-up on 6,000 rows compiles the numba code of both methods (printed as ``compile_new_s``
   and ``compile_full_s``; cold when the numba cache is empty), so no timed run pays it. With
   ``--cold`` there is no warm-up: the first ``new`` run pays the compilation a user's first map
   in a new app process pays (point ``NUMBA_CACHE_DIR`` at an empty folder for an empty disk
   cache; by default numba's cache is the one ``scripts/setup.sh`` warmed);
2. ``new``: :func:`compute_umap` as the app calls it (``seed=None``: every core) — PCA-50, UMAP on a
   seeded sample of ``--fit-size`` points (exact kNN graph by faiss), the rest placed by their
   nearest sample points (faiss IVF); ``--runs`` repeats it (a fresh cache entry each time);
3. ``full``: umap-learn's own full fit on every point after the same PCA-50 (the method before
   sampling). Skipped with ``--million`` (10-15 minutes at 1M) or ``--skip-full``.

Printed: seconds of each and their ratio, trustworthiness at k=10 (scikit-learn) of each on the
same seeded 5,000-point sample against the full-dimensional features, the peak RSS of each run
(sampled from /proc) and of the process, the load average, and the new layout's progress stages
with their rates.

    python benchmarks/bench_projection.py                 # 200k points, new vs full
    python benchmarks/bench_projection.py --n 50000       # 50k points, new vs full (minutes)
    python benchmarks/bench_projection.py --million       # 1,000,000 points, new layout only
    python benchmarks/bench_projection.py --features F.npy --cold --runs 2 --skip-full
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_scale import clip_like  # noqa: E402  (the benchmarks' shared CLIP-like generator)

from clipcleaner_core.projection import _pca_projection, compute_umap  # noqa: E402


class PeakRss:
    """Peak resident memory of this process while the ``with`` block runs (sampled every 50 ms)."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class StageLog:
    """Prints each stage's progress about every 10 % with its rate and the time left."""

    def __init__(self):
        self.last: tuple[str, int] | None = None
        self.stages: dict[str, dict] = {}

    def __call__(self, stage, done, total, rate):
        step = max(1, total // 10)
        if self.last is not None and self.last[0] == stage and done // step == self.last[1] and done < total:
            return
        self.last = (stage, done // step)
        left = f", ~{(total - done) / rate:.0f} s left" if rate else ""
        rate_text = f" at {rate:,.1f}/s" if rate else ""
        print(f"  {stage}: {done:,}/{total:,}{rate_text}{left}", file=sys.stderr, flush=True)
        self.stages[stage] = {"done": done, "total": total, "rate": rate}


def timed_layout(features, root: Path, *, fit_size: int, label: str) -> dict:
    log = StageLog()
    print(f"{label}: fit_size={fit_size:,}", file=sys.stderr, flush=True)
    with PeakRss() as rss:
        start = time.perf_counter()
        coords = compute_umap(features, cache_key=label, cache_root=root, seed=None, fit_size=fit_size,
                              progress=log)
        seconds = time.perf_counter() - start
    return {"coords": coords, "seconds": seconds, "peak_rss_mb": rss.peak, "load": _load()}


def timed_full_fit(features) -> dict:
    """umap-learn's full fit (every core) on every row after the same PCA-50 as the new layout."""
    import umap

    print("full: umap-learn on every point", file=sys.stderr, flush=True)
    with PeakRss() as rss:
        start = time.perf_counter()
        reduced = _pca_projection(features, 50, None, None, None)
        coords = umap.UMAP(n_components=2, n_jobs=-1).fit_transform(reduced).astype(np.float32)
        seconds = time.perf_counter() - start
    return {"coords": coords, "seconds": seconds, "peak_rss_mb": rss.peak, "load": _load()}


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="rows (default 200,000; all rows of --features)")
    parser.add_argument("--million", action="store_true", help="1,000,000 points, new layout only")
    parser.add_argument("--features", type=Path, default=None, help="an existing (N, D) float .npy to lay out")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--fit-size", type=int, default=None, help="default: the library's FIT_SIZE")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--cold", action="store_true", help="no warm-up: the first run pays numba's compilation")
    parser.add_argument("--runs", type=int, default=1, help="times to run the new layout")
    parser.add_argument("--trust-sample", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from clipcleaner_core.projection import FIT_SIZE
    from sklearn.manifold import trustworthiness

    fit_size = args.fit_size or FIT_SIZE
    with tempfile.TemporaryDirectory(prefix="bench-projection-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        if args.features is not None:
            features = np.load(args.features, mmap_mode="r")
            features = features[:args.n] if args.n else features
        else:
            n = 1_000_000 if args.million else (args.n or 200_000)
            clip_like(folder / "features.npy", n, args.classes, args.dim, noise_rate=0.0, seed=args.seed)
            features = np.load(folder / "features.npy", mmap_mode="r")
        n = features.shape[0]
        report = {"n": n, "dim": int(features.shape[1]), "fit_size": fit_size,
                  "generate_s": round(time.perf_counter() - start, 1), "cold": args.cold}

        if not args.cold:
            warm = np.ascontiguousarray(features[:6000])
            start = time.perf_counter()
            compute_umap(warm, cache_key="warmup", cache_root=folder / "warm", seed=None, fit_size=5000)
            report["compile_new_s"] = round(time.perf_counter() - start, 1)
            if not (args.million or args.skip_full):
                start = time.perf_counter()
                timed_full_fit(warm)
                report["compile_full_s"] = round(time.perf_counter() - start, 1)

        runs = {}
        for run in range(1, args.runs + 1):
            label = "new" if args.runs == 1 else f"new{run}"
            runs[label] = timed_layout(features, folder / label, fit_size=fit_size, label=label)
        if not (args.million or args.skip_full):
            runs["full"] = timed_full_fit(features)

        rows = np.sort(np.random.default_rng(args.seed).choice(n, size=min(args.trust_sample, n), replace=False))
        reference = np.asarray(features[rows], dtype=np.float32)
        for name, run in runs.items():
            report[f"{name}_s"] = round(run["seconds"], 1)
            report[f"{name}_load_avg"] = run["load"]
            report[f"{name}_peak_rss_mb"] = round(run["peak_rss_mb"])
            report[f"{name}_trustworthiness"] = round(float(
                trustworthiness(reference, run["coords"][rows], n_neighbors=10)), 4)
        first = next(iter(runs))
        if "full" in runs:
            report["time_ratio_new_over_full"] = round(runs[first]["seconds"] / runs["full"]["seconds"], 3)
            report["trust_gap_full_minus_new"] = round(
                report["full_trustworthiness"] - report[f"{first}_trustworthiness"], 4)
        report["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
