"""How close does the embedding pipeline (files on disk -> cached features) get to the model itself?

Measures, in one run and on one device:
  * the machine's matmul rate (fp32 on CPU; fp32 and the autocast dtype on GPU),
  * the encoder alone on ready-made tensors (images/s), and what fraction of the matmul rate that
    is at 8.8 GFLOP per ViT-B-32 image,
  * ``embed_dataset`` on JPEG files (decode + preprocess in DataLoader workers, model, chunked
    cache writes), as a fraction of the encoder-alone rate (goal: >= 0.9 on CPU),
  * a naive loop (PIL per image, batch 1, autograd on) and the pipeline's speed-up over it.

On CUDA the pipeline decodes the JPEGs on the GPU (nvJPEG, batched; :mod:`clipcleaner_core.gpu_decode`)
and the benchmark also runs it once with decoding in the CPU workers, for comparison. Targets on one
H100/H200-class GPU: files -> features >= 20,000 images/s for ViT-B-32, >= 0.9 of the encoder alone.
Without a GPU the GPU figures are reported as not measured.

ViT-B-32 with random weights (``pretrained=None``) has the same compute as the real one and
needs no download. Run: ``python benchmarks/bench_embed.py [--n 192] [--device auto]``.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipcleaner_core import embed, embed_loader  # noqa: E402
from clipcleaner_core.data.dataset import Dataset  # noqa: E402
from clipcleaner_core.encoders import EncoderSpec  # noqa: E402

GFLOP_PER_IMAGE = {"ViT-B-32": 8.8}


def matmul_rate(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float:
    """Best of ``repeats`` one-second measurements of square-matmul GFLOP/s (best: least disturbed
    by other processes on a shared machine)."""
    return max(_matmul_once(device, dtype) for _ in range(repeats))


def _matmul_once(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
        if device.type == "cuda" and count % 50:
            continue
        _sync(device)
    _sync(device)
    return 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_images(folder: Path, n: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> Dataset:
    """n smooth random JPEGs (photo-like file sizes) as a file-backed dataset."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"img{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path.name)
    return Dataset(name="bench", kind="imagefolder", root=folder, class_names=("a", "b"),
                   labels=np.arange(n) % 2, paths=tuple(paths))


def ready_batch(encoder, dataset, batch_size: int) -> torch.Tensor:
    """A batch of real images, already decoded and preprocessed (the encoder-alone input)."""
    images = [Image.open(dataset.abspath(i % len(dataset))).convert("RGB") for i in range(batch_size)]
    return torch.stack([encoder.preprocess(image) for image in images])


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def encoder_alone(encoder, batch: torch.Tensor, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds to encode n images from ready-made tensors."""
    done, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    while done < n:
        encoder.encode_images(batch)
        done += len(batch)
    _sync(encoder.device)
    scale = n / done
    return (time.perf_counter() - start) * scale, (_cpu_seconds() - cpu) * scale


def pipeline(dataset, spec, cache_root: Path, batch_size: int, num_workers,
             device_decode: bool | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of embed_dataset on files: workers, model, chunk files, sidecar.

    ``device_decode=False`` forces decoding in the CPU workers (None: the default, on the GPU
    when there is one)."""
    real_encode = embed_loader.encode_chunks

    def encode(*args, **kwargs):
        return real_encode(*args, **kwargs, device_decode=device_decode)

    embed_loader.encode_chunks = encode
    start, cpu = time.perf_counter(), _cpu_seconds()
    try:
        result = embed.embed_dataset(dataset, spec, cache_root=cache_root, batch_size=batch_size,
                                     num_workers=num_workers, chunk_size=max(batch_size, 256))
    finally:
        embed_loader.encode_chunks = real_encode
    elapsed = time.perf_counter() - start
    assert not result.meta["reused"] and result.valid.all()
    return elapsed, _cpu_seconds() - cpu


def naive_loop(encoder, dataset, n: int) -> float:
    model = encoder.model
    start = time.perf_counter()
    for i in range(n):
        image = Image.open(dataset.abspath(i)).convert("RGB")
        x = encoder.preprocess(image)[None].to(encoder.device)
        features = model.encode_image(x)
        (features / features.norm(dim=-1, keepdim=True)).detach().cpu()
    _sync(encoder.device)
    return n / (time.perf_counter() - start)


def run(args, device: torch.device, precision: str, n: int, naive_n: int, folder: Path,
        batch_size: int) -> None:
    args = argparse.Namespace(**{**vars(args), "batch_size": batch_size})
    spec = EncoderSpec(model=args.model, pretrained=None, device=str(device), precision=precision)
    encoder = embed._encoder(spec, allow_download=False)  # load once; the pipeline reuses it
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(encoder.precision, torch.float32)
    peak = matmul_rate(device, dtype)
    print(f"\n== {device.type} ({encoder.precision}), torch threads {torch.get_num_threads()}, "
          f"{n} images, batch {args.batch_size}"
          + (f", JPEGs decoded on the GPU, {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"matmul rate ({dtype}): {peak:8.1f} GFLOP/s")
    dataset = write_images(folder / f"images-{device.type}", n)
    batch = ready_batch(encoder, dataset, args.batch_size)
    encoder.encode_images(batch)  # warm-up
    # Encoder-alone and pipeline rounds alternate on disjoint slices of the images, so load from
    # other processes on a shared machine biases neither side.
    alone_s, piped_s, round_ratios = np.zeros(2), np.zeros(2), []
    for part in np.array_split(np.arange(n), args.rounds):
        subset = dataset.replace(labels=dataset.labels[part],
                                 paths=tuple(dataset.paths[i] for i in part))
        alone_round = np.array(encoder_alone(encoder, batch, len(part)))
        piped_round = np.array(pipeline(subset, spec, folder / f"cache-{device.type}",
                                        args.batch_size, args.workers))
        round_ratios.append(alone_round[0] / piped_round[0])
        alone_s, piped_s = alone_s + alone_round, piped_s + piped_round
    alone, piped = n / alone_s[0], n / piped_s[0]
    flops = GFLOP_PER_IMAGE.get(args.model)
    print(f"encoder on ready tensors: {alone:8.2f} images/s" + (
        f" = {alone * flops:.1f} GFLOP/s = {alone * flops / peak:.2f} of matmul rate" if flops else ""))
    print(f"files -> cached embeddings: {piped:8.2f} images/s = {piped / alone:.2f} of the encoder alone"
          + (f" ({piped * flops / peak:.2f} of matmul rate)" if flops else ""))
    print(f"  per round (wall): {', '.join(f'{r:.2f}' for r in round_ratios)}; CPU seconds per "
          f"image: encoder {alone_s[1] / n:.3f}, pipeline {piped_s[1] / n:.3f} -> CPU-time ratio "
          f"{alone_s[1] / piped_s[1]:.2f}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    if device.type == "cuda":
        print(f"GPU target: files -> features {piped:.0f} images/s (goal >= 20,000 for ViT-B-32), "
              f"{piped / alone:.2f} of the encoder alone (goal >= 0.9)")
        cpu_decoded = n / pipeline(dataset, spec, folder / "cache-cuda-cpu-decode", args.batch_size,
                                   args.workers, device_decode=False)[0]
        print(f"same pipeline with JPEGs decoded in the CPU workers: {cpu_decoded:8.2f} images/s "
              f"(GPU decoding is {piped / cpu_decoded:.1f}x faster)")
    naive = naive_loop(encoder, dataset, naive_n)
    print(f"naive loop (PIL, batch 1, autograd on): {naive:8.2f} images/s; "
          f"pipeline is {piped / naive:.1f}x faster")


def scaling(args, folder: Path) -> None:
    """Files -> features on 1 GPU and on every local GPU (one torchrun process each); efficiency =
    rate(G) / (G x rate(1)), from the ranks' own images/s (process start-up and model load excluded)."""
    from clipcleaner_core.embed_launch import embed_on_local_gpus

    gpus = torch.cuda.device_count()
    if gpus < 2:
        print(f"scaling from 1 to all GPUs: not measured ({gpus} GPU visible)")
        return
    n = args.gpu_n * gpus
    dataset = write_images(folder / "images-scaling", n, seed=1)
    spec = EncoderSpec(model=args.model, pretrained=None, device="cuda")
    rates = {}
    for nproc in (1, gpus):
        final = []
        embed_on_local_gpus(dataset, spec, nproc=nproc, batch_size=args.gpu_batch_size,
                            cache_root=folder / f"cache-scaling-{nproc}", on_ranks=final.append)
        rates[nproc] = sum(rank.rate or 0.0 for rank in final[-1])
    print(f"scaling: 1 GPU {rates[1]:.0f} images/s, {gpus} GPUs {rates[gpus]:.0f} images/s -> efficiency "
          f"{rates[gpus] / (gpus * rates[1]):.2f} (goal >= 0.9)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=192, help="images through the pipeline (CPU)")
    parser.add_argument("--naive-n", type=int, default=24, help="images through the naive loop")
    parser.add_argument("--gpu-n", type=int, default=4096, help="images through the pipeline (GPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gpu-batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="alternating encoder/pipeline rounds")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: auto)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        folder = Path(tmp)
        cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
        if args.device in ("auto", "cpu"):
            run(args, torch.device("cpu"), "fp32", args.n, args.naive_n, folder, args.batch_size)
        if cuda:
            run(args, torch.device("cuda"), "auto", args.gpu_n, args.naive_n * 8, folder,
                args.gpu_batch_size)
            scaling(args, folder)
        else:
            print("\nGPU figures (JPEGs decoded on the GPU -> features, encoder alone, their ratio, "
                  "scaling over GPUs): not measured, no CUDA device is visible")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
