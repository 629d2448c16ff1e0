"""Memory at real scale: peak RSS of select (fit + thresholds + score table) at N x K.

Writes CLIP-like synthetic features (power-law spectrum, one shared "cone" direction, class
clusters, L2-normalised; condition number ~5,000) to an .npy file in chunks, then runs in a FRESH
process, so each figure is that process's own peak RSS:

* ``ours``: ``fit_scores`` on the memory-mapped features (row chunks, per-sample vectors only),
  ``select`` and ``score_table``;
* ``--reference``: the same fit through the (N, K) float64 matrices the code kept before this
  change (dense zero-shot and probe log-probabilities, then the scores), for the RSS it needed
  and the clean set to compare with (Jaccard).

    python benchmarks/bench_scale.py --n 200000 --classes 1000 --reference
    python benchmarks/bench_scale.py --n 1281167 --classes 1000 --probe-max-iter 3

``--probe-max-iter`` caps the probe's L-BFGS iterations (the memory does not depend on it; the
time does: one evaluation at 1.28M x 1,000 x 512 is ~2.6 TFLOP, about a minute on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS = 65_536


def clip_like(path: Path, n: int, k: int, dim: int, *, noise_rate: float, seed: int) -> dict:
    """Write (n, dim) float32 CLIP-like features to ``path`` in chunks; return labels and text."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scale = np.arange(1, dim + 1) ** -0.68            # power-law spectrum, cond ~5,000 at 512-d
    cone = _unit(rng.standard_normal(dim))
    centres = (rng.standard_normal((k, dim)) * scale) @ basis.T
    centres = 0.6 * centres / np.linalg.norm(centres, axis=1, keepdims=True)
    true = rng.integers(0, k, n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for lo in range(0, n, ROWS):
        hi = min(n, lo + ROWS)
        noise = (rng.standard_normal((hi - lo, dim)) * scale) @ basis.T
        noise *= 0.5 / np.sqrt((scale ** 2).sum())
        out[lo:hi] = _unit(cone + centres[true[lo:hi]] + noise)
    out.flush()
    del out
    labels = true.copy()
    flip = rng.random(n) < noise_rate
    labels[flip] = rng.integers(0, k, int(flip.sum()))
    text_labels = np.repeat(np.arange(k), 2)
    text = _unit(0.3 * cone + centres[text_labels] + 0.02 * rng.standard_normal((2 * k, dim)))
    return {"labels": labels, "true_labels": true, "text_features": text.astype(np.float32),
            "text_labels": text_labels}


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def run_one(folder: Path, mode: str, max_iter: int | None, float16: bool) -> dict:
    """Fit + select in this process; return timings, peak RSS and the clean mask's file."""
    from clipcleaner_core import probe
    from clipcleaner_core.scoring import ScoringConfig, fit_scores
    from clipcleaner_core.selection import score_table, select

    if max_iter is not None:
        compute = probe._compute_probe

        def capped(features, rows, labels, num_classes, c, tol, _max_iter, monitor):
            return compute(features, rows, labels, num_classes, c, tol, max_iter, monitor)

        probe._compute_probe = capped
    arrays = np.load(folder / "arrays.npz")
    features = np.load(folder / ("features16.npy" if float16 else "features.npy"), mmap_mode="r")
    k = int(arrays["labels"].max()) + 1
    start = time.perf_counter()
    if mode == "ours":
        fit = fit_scores(features, arrays["labels"], num_classes=k,
                         text_features=arrays["text_features"], text_labels=arrays["text_labels"],
                         config=ScoringConfig(neighbours=0))  # the paper's scores only
    else:
        fit = _dense_fit(features, arrays, k)
    fitted = time.perf_counter() - start
    selection = select(fit)
    table = score_table(fit, selection, true_labels=arrays["true_labels"])
    total = time.perf_counter() - start
    mask_path = folder / f"clean-{mode}{'-f16' if float16 else ''}.npy"
    np.save(mask_path, selection.clean_mask)
    return {"mode": mode, "float16": float16, "fit_s": round(fitted, 1), "total_s": round(total, 1),
            "rows": len(table), "kept": int(selection.clean_mask.sum()),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "mask": str(mask_path)}


def _dense_fit(features, arrays, k):
    """The computation as the code did it before the chunked fit: whole (N, K) float64 matrices."""
    from clipcleaner_core.gmm import fit_mixtures, mixture_posterior
    from clipcleaner_core.probe import probe_log_probabilities
    from clipcleaner_core.scoring import consistency_score, loss_score, zero_shot_log_probabilities

    labels = arrays["labels"]
    parts = {}
    dense = {
        "zs": zero_shot_log_probabilities(np.asarray(features), arrays["text_features"],
                                          arrays["text_labels"], num_classes=k),
        "lr": probe_log_probabilities(np.asarray(features), labels, num_classes=k),
    }
    for prefix, log_p in dense.items():
        parts[f"p_{prefix}"] = np.exp(log_p).astype(np.float32)
        loss = loss_score(log_p, labels, num_classes=k)
        parts[f"{prefix}_loss_score"] = loss
        parts[f"{prefix}_consistency"] = consistency_score(log_p, labels)
        parts[f"{prefix}_clean_prob"] = mixture_posterior(loss, labels, fit_mixtures(loss, labels, num_classes=k))
    both = np.argmax(parts["p_zs"] + parts["p_lr"], axis=1)
    return _DenseFit(labels, k, parts, both)


class _DenseFit:
    """Duck-typed stand-in for the old ScoreFit (it held p_zs and p_lr)."""

    has_zeroshot = has_probe = True
    has_neighbours = False

    def __getattr__(self, name):  # scores beyond the paper (neighbour evidence) are absent
        if name.startswith(("knn_", "lemon_", "outlier_")):
            return None
        raise AttributeError(name)

    def __init__(self, labels, k, parts, both):
        self.labels, self.num_classes, self._both = labels, k, both
        for name, value in parts.items():
            setattr(self, name, value)

    def __len__(self):
        return int(self.labels.size)

    def suggested_label(self, *, zeroshot, probe):
        return self._both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--folder", type=Path, default=Path("cache/bench-scale"))
    parser.add_argument("--reference", action="store_true", help="also run the dense (N, K) path")
    parser.add_argument("--float16", action="store_true", help="also run on float16 features")
    parser.add_argument("--probe-max-iter", type=int, default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "F16"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.folder / f"n{args.n}-k{args.classes}-d{args.dim}"
    if args.child:
        print(json.dumps(run_one(folder, args.child[0], args.probe_max_iter, args.child[1] == "1")))
        return
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "arrays.npz").exists():
        start = time.perf_counter()
        arrays = clip_like(folder / "features.npy", args.n, args.classes, args.dim,
                           noise_rate=0.3, seed=0)
        np.savez(folder / "arrays.npz", **arrays)
        print(f"generated {args.n:,} x {args.dim} CLIP-like features in {time.perf_counter() - start:.0f} s")
    if args.float16 and not (folder / "features16.npy").exists():
        source = np.load(folder / "features.npy", mmap_mode="r")
        half = np.lib.format.open_memmap(folder / "features16.npy", mode="w+", dtype=np.float16,
                                         shape=source.shape)
        for lo in range(0, source.shape[0], ROWS):
            half[lo:lo + ROWS] = source[lo:lo + ROWS]
        half.flush()
        del half
    runs = [("ours", False)] + [("ours", True)] * args.float16 + [("reference", False)] * args.reference
    results = {}
    for mode, f16 in runs:
        command = [sys.executable, __file__, "--n", str(args.n), "--classes", str(args.classes),
                   "--dim", str(args.dim), "--folder", str(args.folder), "--child", mode, str(int(f16))]
        if args.probe_max_iter is not None:
            command += ["--probe-max-iter", str(args.probe_max_iter)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{mode} run failed:\n{done.stderr[-3000:]}")
        line = done.stdout.strip().splitlines()[-1]
        results[(mode, f16)] = json.loads(line)
        print(json.dumps(results[(mode, f16)]))
    ours = np.load(results[("ours", False)]["mask"])
    for key, result in results.items():
        if key != ("ours", False):
            other = np.load(result["mask"])
            jaccard = (ours & other).sum() / max(1, (ours | other).sum())
            print(f"clean set of {key[0]}{' float16' if key[1] else ''} vs ours float32: "
                  f"Jaccard {jaccard:.5f}; peak RSS {result['peak_rss_gb']} GB vs "
                  f"{results[('ours', False)]['peak_rss_gb']} GB")


if __name__ == "__main__":
    main()
