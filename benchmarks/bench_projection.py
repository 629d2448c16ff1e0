"""Map layout at scale: the sampled UMAP layout vs umap-learn's full fit, same features, same process.

CLIP-like synthetic features (power-law spectrum, one shared "cone" direction, class clusters,
L2-normalised; the generator of ``bench_scale.py``) are written to an .npy file and memory-mapped,
as the app's embeddings are. Then, in this process:

1. a warm-up on 6,000 rows compiles umap-learn's and pynndescent's numba code (printed as
   ``compile_s``: cold when the numba cache is empty), so neither timed run pays it;
2. ``new``: :func:`compute_umap` as the app calls it (``seed=None``: every core) — PCA-50, UMAP on a
   seeded sample of ``--fit-size`` points, the rest placed by their nearest sample points;
3. ``full``: the same call with ``fit_size=N``, i.e. umap-learn on every point after PCA-50 (the
   method before this change). Skipped with ``--million`` (10-15 minutes at 1M) or ``--skip-full``.

Printed: seconds of each and their ratio, trustworthiness at k=10 (scikit-learn) of each on the
same seeded 5,000-point sample against the 512-d features, the peak RSS of each run (sampled from
/proc) and of the process, and the new layout's progress stages with their rates.

    python benchmarks/bench_projection.py                 # 200k points, new vs full
    python benchmarks/bench_projection.py --million       # 1,000,000 points, new layout only
"""
from __future__ import annotations

import argparse
import json
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

from clipcleaner_core.projection import compute_umap  # noqa: E402


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
    return {"coords": coords, "seconds": seconds, "peak_rss_mb": rss.peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--million", action="store_true", help="1,000,000 points, new layout only")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--fit-size", type=int, default=None, help="default: the library's FIT_SIZE")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--trust-sample", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from clipcleaner_core.projection import FIT_SIZE
    from sklearn.manifold import trustworthiness

    n = 1_000_000 if args.million else args.n
    fit_size = args.fit_size or FIT_SIZE
    with tempfile.TemporaryDirectory(prefix="bench-projection-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        clip_like(folder / "features.npy", n, args.classes, args.dim, noise_rate=0.0, seed=args.seed)
        features = np.load(folder / "features.npy", mmap_mode="r")
        report = {"n": n, "dim": args.dim, "classes": args.classes, "fit_size": fit_size,
                  "generate_s": round(time.perf_counter() - start, 1)}

        start = time.perf_counter()
        warm = np.ascontiguousarray(features[:6000])
        compute_umap(warm, cache_key="warmup", cache_root=folder / "warm", seed=None, fit_size=5000)
        report["compile_s"] = round(time.perf_counter() - start, 1)

        runs = {"new": timed_layout(features, folder / "new", fit_size=fit_size, label="new")}
        if not (args.million or args.skip_full):
            runs["full"] = timed_layout(features, folder / "full", fit_size=n, label="full")

        rows = np.sort(np.random.default_rng(args.seed).choice(n, size=min(args.trust_sample, n), replace=False))
        reference = np.asarray(features[rows], dtype=np.float32)
        for name, run in runs.items():
            report[f"{name}_s"] = round(run["seconds"], 1)
            report[f"{name}_peak_rss_mb"] = round(run["peak_rss_mb"])
            report[f"{name}_trustworthiness"] = round(float(
                trustworthiness(reference, run["coords"][rows], n_neighbors=10)), 4)
        if "full" in runs:
            report["time_ratio_new_over_full"] = round(runs["new"]["seconds"] / runs["full"]["seconds"], 3)
            report["trust_gap_full_minus_new"] = round(
                report["full_trustworthiness"] - report["new_trustworthiness"], 4)
        report["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
