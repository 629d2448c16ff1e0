#!/usr/bin/env bash
# Every GPU figure the project claims, in one run of a few minutes on a fresh GPU machine.
#
#   benchmarks/gpu_check.sh --prepare   # on a connected machine: fetch the wheels the GPU image
#                                        # lacks into .gpu-wheels/ (carry that folder along)
#   benchmarks/gpu_check.sh             # on the GPU machine, from the repository root
#
# A GPU machine with PyTorch already installed (a CUDA image) needs only open_clip and its small
# pure-Python dependencies, installed from .gpu-wheels/ without the network. Prints: embedding
# throughput (JPEG files -> cached features, and the encoder alone on ready tensors), the probe and
# zero-shot fit at 200k x 1,000 on the device against the CPU path, one AMP training epoch of
# PreAct ResNet-18 on generated 32x32 data, and the GPU-marked tests. Works on a CPU-only machine
# too (the GPU figures are then skipped), which is how it is tried before a GPU is lent.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && ! "$PY" -c "import torch" 2>/dev/null && PY=.venv/bin/python

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHEELS"
  "$PY" -m pip download --quiet --no-deps -d "$WHEELS" open_clip_torch ftfy wcwidth filelock
  ls "$WHEELS"
  exit 0
fi

section() { printf '\n=== %s (%s) ===\n' "$1" "$(date +%T)"; }
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1

section "machine"
"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
if ! "$PY" -c "import open_clip" 2>/dev/null; then
  if [ -d "$WHEELS" ]; then
    "$PY" -m pip install --quiet --no-deps --no-index "$WHEELS"/*.whl || echo "could not install $WHEELS"
  else
    echo "open_clip is missing and there is no $WHEELS/: run 'benchmarks/gpu_check.sh --prepare' first"
  fi
fi

section "embedding: JPEG files -> cached features, and the encoder alone"
timeout 240 "$PY" benchmarks/bench_embed.py --device auto --n 96 --naive-n 8 --gpu-n 8192 --rounds 1

section "probe + zero-shot fit at 200k x 1,000 (device vs CPU)"
timeout 150 "$PY" - <<'EOF'
import time, numpy as np, torch
from clipcleaner_core import probe, scoring
from clipcleaner_core.metrics import make_synthetic_problem
n, k = (200_000, 1000) if torch.cuda.is_available() else (5_000, 50)
p = make_synthetic_problem(n, k, 512, noise_rate=0.3, spread=1.5, seed=0)
for device in ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]:
    kwargs = {"device": device} if "device" in scoring.fit_scores.__code__.co_varnames else {}
    if device == "cuda" and not kwargs:
        print("fit_scores has no device parameter: the fit runs on the CPU only")
        continue
    start = time.perf_counter()
    fit = scoring.fit_scores(p["features"], p["labels"], num_classes=k, text_features=p["text_features"],
                             text_labels=p["text_labels"], **kwargs)
    print(f"{device}: fit_scores N={n:,} K={k:,}: {time.perf_counter() - start:.1f} s")
EOF

section "training: one AMP epoch of PreAct ResNet-18 on 32x32 images"
timeout 150 "$PY" benchmarks/bench_train.py --n 5000 --epochs 1 --cnn-batches 3

section "GPU-marked tests"
gpu_tests=$(grep -l "pytest.mark.gpu" tests/*.py 2>/dev/null)
if [ -z "$gpu_tests" ]; then
  echo "no GPU-marked tests"
elif "$PY" -c "import pytest" 2>/dev/null; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -o addopts="" $gpu_tests 2>&1 | tail -15
fi
section "done"
