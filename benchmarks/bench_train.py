"""Training speed: probe heads on 50,000 x 512 features, PreAct ResNet-18 images/s.

    python benchmarks/bench_train.py [--epochs 3] [--cnn-batches 5] [--n 50000]

Prints seconds per epoch for the linear and MLP heads (the full MixFix loop: balanced batches,
mixup, SGD, then predicting every sample for relabel-and-grow and the test split), and PreAct
ResNet-18 training images/s on the CPU, and on the GPU with mixed precision vs fp32 when CUDA is
present.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.train import PreActResNet18, TrainConfig, train
from clipcleaner_core.train.mixfix import mixup, soft_cross_entropy


def synthetic_features(n: int, dim: int = 512, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    centers = rng.normal(0, 1, (k, dim))
    features = centers[true] + rng.normal(0, 3, (n, dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    given = true.copy()
    flip = rng.random(n) < 0.4
    given[flip] = rng.integers(0, k, flip.sum())
    dataset = Dataset(name="bench", kind="manifest", root=".", class_names=[str(c) for c in range(k)],
                      labels=given, paths=[str(i) for i in range(n)], true_labels=true)
    table = pd.DataFrame({"index": np.arange(n), "is_clean": given == true, "final_label": given})
    return dataset, features.astype(np.float32), table


def bench_heads(n: int, epochs: int) -> None:
    dataset, features, table = synthetic_features(n)
    for backbone in ("linear", "mlp"):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = train(TrainConfig(data="bench", backbone=backbone, epochs=epochs, device="cpu"),
                           run_dir=Path(folder), dataset=dataset, features=features, selection=table)
            wall = time.perf_counter() - start
        per_epoch = np.mean([m["time"] for m in result.metrics])
        print(f"{backbone:>6} head, {n} x 512, batch 128: {per_epoch:.2f} s/epoch "
              f"(run incl. setup {wall:.1f} s, {epochs} epochs, final test acc "
              f"{result.final_test_acc:.3f})")


def bench_preact(device: str, batches: int, batch_size: int, *, amp: bool) -> float:
    """Training images/s of PreAct ResNet-18 on 32x32 inputs (mixup + soft CE + SGD)."""
    torch.manual_seed(0)
    model = PreActResNet18(10).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (batch_size,), device=device), 10).float()
    rng = np.random.default_rng(0)

    def step():
        inputs, targets = mixup(x, y, beta=1.0, generator=rng)
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=amp):
            loss = soft_cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cnn-batches", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    bench_heads(args.n, args.epochs)
    cpu = bench_preact("cpu", args.cnn_batches, 128, amp=False)
    print(f"PreAct ResNet-18 CPU fp32, batch 128: {cpu:.0f} images/s "
          f"(~{50_000 / cpu / 60:.0f} min per 50k-image epoch)")
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        fp32 = bench_preact("cuda", 50, 128, amp=False)
        mixed = bench_preact("cuda", 50, 128, amp=True)
        print(f"PreAct ResNet-18 GPU batch 128: fp32 {fp32:.0f} images/s, mixed precision "
              f"{mixed:.0f} images/s ({mixed / fp32:.2f}x)")


if __name__ == "__main__":
    main()
