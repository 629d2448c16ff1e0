"""Small generated trees in exactly the on-disk layouts of the paper's datasets.

Images are 16x16 PNG/JPEG files whose colour depends on the class, so a model can learn them.
Every builder returns the root folder; file names and list formats follow the public releases.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from clipcleaner_core.data.webvision import WEBVISION_WNIDS

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220),
           (220, 30, 220), (120, 60, 0), (0, 120, 60), (60, 0, 120), (200, 200, 200)]


def write_image(path: Path, label: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[label % len(COLOURS)], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def animal10n(root: Path, per_class=(3, 2), classes=10) -> Path:
    for folder, count in zip(("training", "testing"), per_class):
        for label in range(classes):
            for i in range(count):
                write_image(root / folder / f"{label}_{label * 100 + i:05d}.jpg", label, label * 7 + i)
    return root


def red_mini_imagenet(root: Path, per_class=2, classes=100, ratios=("0.0", "0.4"), flip_every=3) -> Path:
    """Both colours at each ratio; blue flips every ``flip_every``-th label of the 0.0 list."""
    split = root / "split"
    split.mkdir(parents=True, exist_ok=True)
    names, labels = [], []
    for label in range(classes):
        for i in range(per_class):
            name = f"n{label:08d}{i:08d}.jpg"
            write_image(root / "all_images" / name, label, label * 3 + i)
            names.append(name)
            labels.append(label)
    for ratio in ratios:
        noisy = [(k + 1) % classes if float(ratio) > 0 and j % flip_every == 0 else k
                 for j, k in enumerate(labels)]
        for colour in ("red", "blue"):
            lines = [f"{n} {k}" for n, k in zip(names, noisy)]
            (split / f"{colour}_noise_nl_{ratio}").write_text("\n".join(lines) + "\n")
    val = []
    for label in range(classes):
        name = f"v{label:08d}.jpg"
        write_image(root / "all_validation" / name, label, 1000 + label)
        val.append(f"{name} {label}")
    (split / "clean_validation").write_text("\n".join(val) + "\n")
    return root


def webvision(root: Path, per_class=2, classes=52, val_per_class=1, imagenet_per_class=1) -> Path:
    """mini-WebVision with two classes beyond the first 50 (they must be dropped)."""
    train, val = [], []
    for label in range(classes):
        for i in range(per_class):
            rel = f"google/q{label + 1:04d}/{i:06d}.jpg"
            write_image(root / rel, label, label * 5 + i)
            train.append(f"{rel} {label}")
        for i in range(val_per_class):
            name = f"val{label * 10 + i:06d}.jpg"
            write_image(root / "val_images_256" / name, label, 500 + label)
            val.append(f"{name} {label}")
    (root / "info").mkdir(parents=True, exist_ok=True)
    (root / "info" / "train_filelist_google.txt").write_text("\n".join(train) + "\n")
    (root / "info" / "val_filelist.txt").write_text("\n".join(val) + "\n")
    for label, wnid in enumerate(WEBVISION_WNIDS):
        for i in range(imagenet_per_class):
            write_image(root / "imagenet_val" / wnid / f"ILSVRC2012_val_{label * 10 + i:08d}.JPEG",
                        label, 900 + label)
    return root


def clothing1m(root: Path, train_per_class=3, test_per_class=1, classes=14) -> Path:
    names = ["T-shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
             "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]
    (root / "category_names_eng.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "category_names_eng.txt").write_text("\n".join(names[:classes]) + "\n")
    noisy_kv, clean_kv, train_keys, val_keys, test_keys = [], [], [], [], []
    for label in range(classes):
        for i in range(train_per_class):
            rel = f"images/{label}/{i:02d}/{label}{i:04d}.jpg"
            write_image(root / rel, label, label * 11 + i)
            noisy_kv.append(f"{rel} {label}")
            train_keys.append(rel)
        for i in range(test_per_class):
            for keys, tag in ((test_keys, "t"), (val_keys, "v")):
                rel = f"images/{label}/99/{tag}{label}{i:04d}.jpg"
                write_image(root / rel, label, 700 + label)
                clean_kv.append(f"{rel} {label}")
                keys.append(rel)
    for name, lines in (("noisy_label_kv.txt", noisy_kv), ("clean_label_kv.txt", clean_kv),
                        ("noisy_train_key_list.txt", train_keys), ("clean_val_key_list.txt", val_keys),
                        ("clean_test_key_list.txt", test_keys)):
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def cifar10_idn_csv(path: Path, clean: np.ndarray, noisy: np.ndarray) -> Path:
    rows = "\n".join(f"{int(c)},{int(n)}" for c, n in zip(clean, noisy))
    path.write_text("label,label_noisy\n" + rows + "\n")
    return path


def cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> Path:
    """A CIFAR-10 python-version folder with ``5 * per_batch`` training images."""
    import pickle

    rng = np.random.default_rng(seed)
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def batch(n):
        labels = rng.integers(0, 10, n)
        data = np.stack([np.full(3072, 25 * k, dtype=np.uint8) for k in labels])
        data = np.clip(data + rng.integers(0, 20, data.shape), 0, 255).astype(np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {f"data_batch_{i}": batch(per_batch) for i in range(1, 6)}
    files["test_batch"] = batch(per_batch)
    files["batches.meta"] = {b"label_names": [n.encode() for n in names]}
    for name, payload in files.items():
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    return root
