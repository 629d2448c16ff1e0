"""Embedding: cached by content, resumable after cancel or kill -9, tolerant of bad files and full
disks, safe under races."""
import json
import multiprocessing
import re
import shutil
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from clipcleaner_core import embed_loader, storage
from clipcleaner_core.storage import StorageError
from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.embed import embed_dataset, embed_texts, embedding_key, load_embedding
from clipcleaner_core.encoders import EncoderSpec, load_encoder
from clipcleaner_core.errors import Cancelled, CLIPCleanerError, ConfigError, DataError
from clipcleaner_core.testing import make_tiny_clip
from fault_helpers import run_paused, small_disk

PIXELS = EncoderSpec(model="pixels")


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    name, weights = make_tiny_clip(tmp_path_factory.mktemp("tiny"))
    return EncoderSpec(model=name, pretrained=str(weights))


def memory_dataset(n=40, seed=0, size=24):
    rng = np.random.default_rng(seed)
    return Dataset(name="mem", kind="demo", root=".", class_names=("a", "b", "c"),
                   labels=rng.integers(0, 3, n), paths=tuple(f"train/{i:05d}" for i in range(n)),
                   images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def file_dataset(folder, n=12, bad=None):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path.name)
    for i, content in (bad or {}).items():
        (folder / paths[i]).write_bytes(content)
    return Dataset(name="files", kind="imagefolder", root=folder, class_names=("x", "y"),
                   labels=np.arange(n) % 2, paths=tuple(paths))


@pytest.fixture
def compute_calls(monkeypatch):
    calls = []
    real = embed_loader.encode_chunks

    def counting(dataset, encoder, chunks, pending, **kw):
        calls.append(list(pending))
        return real(dataset, encoder, chunks, pending, **kw)

    monkeypatch.setattr(embed_loader, "encode_chunks", counting)
    return calls


def test_embeddings_are_cached_by_content_and_reused(tmp_path, compute_calls):
    dataset = memory_dataset()
    first = embed_dataset(dataset, PIXELS, cache_root=tmp_path, chunk_size=16)
    assert first.image_features.shape == (40, 768) and first.image_features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first.image_features, axis=1), 1.0, atol=1e-5)
    assert first.valid.all() and first.bad_files.empty and not first.meta["reused"]
    relabelled = dataset.replace(labels=(dataset.labels + 1) % 3)  # labels don't change features
    second = embed_dataset(relabelled, PIXELS, cache_root=tmp_path)
    assert compute_calls == [[0, 1, 2]] and second.meta["reused"]
    assert isinstance(second.image_features, np.memmap)
    np.testing.assert_array_equal(second.image_features, first.image_features)
    reopened = load_embedding(first.key, cache_root=tmp_path)
    np.testing.assert_array_equal(reopened.image_features, first.image_features)
    assert (tmp_path / "embeddings" / first.key / "features.npy.json").exists()
    with pytest.raises(CLIPCleanerError, match="no complete embeddings"):
        load_embedding("0" * 24, cache_root=tmp_path)


def test_new_embeddings_are_listed_with_their_dataset_name(tmp_path):
    from clipcleaner_core.store import Catalogue

    dataset = memory_dataset()
    embedding = embed_dataset(dataset, PIXELS, cache_root=tmp_path)
    catalogue = Catalogue(tmp_path / "catalogue.sqlite")
    listed = catalogue.list_embeddings()
    assert embedding.key in set(listed["key"])
    fp = listed.loc[listed["key"] == embedding.key, "dataset_fp"].iloc[0]
    datasets = catalogue.list_datasets()
    assert datasets.loc[datasets["fingerprint"] == fp, "name"].tolist() == [dataset.name]


def test_key_changes_with_pixels_and_encoder(tiny_spec):
    dataset = memory_dataset()
    other_pixels = memory_dataset(seed=5)
    assert embedding_key(dataset, PIXELS) != embedding_key(other_pixels, PIXELS)
    assert embedding_key(dataset, PIXELS) != embedding_key(dataset, tiny_spec)


def test_cancelled_run_resumes_only_the_remaining_chunks(tmp_path, tiny_spec, compute_calls):
    dataset = memory_dataset(n=40)
    seen = []

    def cancel_after_first_chunk():
        return len(seen) > 0 and seen[-1] >= 10

    with pytest.raises(Cancelled, match="1 of 4 chunks"):
        embed_dataset(dataset, tiny_spec, cache_root=tmp_path / "a", chunk_size=10, batch_size=5,
                      num_workers=0, progress=lambda stage, done, total, rate: seen.append(done),
                      cancel=cancel_after_first_chunk)
    seen.clear()
    resumed = embed_dataset(dataset, tiny_spec, cache_root=tmp_path / "a", chunk_size=10,
                            batch_size=5, num_workers=0, progress=lambda s, d, t, r: seen.append(d))
    assert compute_calls == [[0, 1, 2, 3], [1, 2, 3]] and seen[0] == 10 and seen[-1] == 40
    straight = embed_dataset(dataset, tiny_spec, cache_root=tmp_path / "b", chunk_size=10,
                             batch_size=5, num_workers=0)
    np.testing.assert_array_equal(resumed.image_features, straight.image_features)
    assert not (resumed.folder / "chunks").exists()


def test_undecodable_files_are_marked_invalid_and_the_rest_embedded(tmp_path, tiny_spec):
    dataset = file_dataset(tmp_path, n=12, bad={3: b"not an image at all", 7: b""})
    result = embed_dataset(dataset, tiny_spec, cache_root=tmp_path / "cache", batch_size=4,
                           chunk_size=8, num_workers=2)
    assert result.valid.tolist() == [i not in (3, 7) for i in range(12)]
    assert result.bad_files["index"].tolist() == [3, 7]
    assert result.bad_files["path"].tolist() == ["img003.png", "img007.png"]
    assert all(result.bad_files["reason"].str.len() > 0)
    assert not np.any(result.image_features[[3, 7]])
    encoder = load_encoder(tiny_spec)
    with Image.open(tmp_path / "img005.png") as image:
        single = encoder.encode_images(encoder.preprocess(image.convert("RGB"))[None]).numpy()[0]
    np.testing.assert_allclose(result.image_features[5], single, atol=1e-5)


def _embed_in_process(cache_root, queue):
    result = embed_dataset(memory_dataset(n=60), PIXELS, cache_root=cache_root, chunk_size=7,
                           batch_size=3, num_workers=0)
    queue.put((result.meta["reused"], np.asarray(result.image_features).tobytes()))


def test_two_concurrent_writers_do_not_corrupt(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    writers = [ctx.Process(target=_embed_in_process, args=(tmp_path, queue)) for _ in range(2)]
    for writer in writers:
        writer.start()
    outputs = [queue.get(timeout=120) for _ in writers]
    for writer in writers:
        writer.join(timeout=60)
    assert all(w.exitcode == 0 for w in writers)
    reference = embed_dataset(memory_dataset(n=60), PIXELS, cache_root=tmp_path / "ref")
    assert sorted(reused for reused, _ in outputs) == [False, True]  # one computed, one reused
    assert outputs[0][1] == outputs[1][1] == np.asarray(reference.image_features).tobytes()
    assert len(list((tmp_path / "embeddings").iterdir())) == 1


def test_text_features_are_cached_and_pixels_has_none(tmp_path, tiny_spec, monkeypatch):
    texts = ["a photo of a cat.", "a photo of a dog.", "a photo of a bird."]
    first = embed_texts(tiny_spec, texts, cache_root=tmp_path)
    assert first.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_array_equal(embed_texts(tiny_spec, texts, cache_root=tmp_path), first)
    monkeypatch.undo()
    with pytest.raises(CLIPCleanerError, match="no text tower"):
        embed_texts(PIXELS, texts, cache_root=tmp_path)


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(CLIPCleanerError, match="batch_size"):
        embed_dataset(memory_dataset(), PIXELS, cache_root=tmp_path, batch_size=0)
    with pytest.raises(CLIPCleanerError, match="no samples"):
        embed_dataset(memory_dataset(n=0), PIXELS, cache_root=tmp_path)


_EMBED_CHILD = textwrap.dedent("""
    import sys
    from clipcleaner_core.embed import embed_dataset
    from clipcleaner_core.encoders import EncoderSpec
    from test_embed import memory_dataset
    embed_dataset(memory_dataset(n=60), EncoderSpec(model="pixels"), cache_root=sys.argv[1],
                  chunk_size=7, batch_size=3, num_workers=0)
""")


@pytest.mark.parametrize("pause_at, pending", [
    ("after:00003.json:1", [4, 5, 6, 7, 8]),  # while encoding: chunks 0-3 are saved
    ("before:features.npy:1", []),            # features.npy written, not yet in place
    ("after:features.npy:1", []),             # in place, but no valid.npy nor sidecar yet
    ("after:valid.npy:1", []),                # everything but the sidecar
])
def test_kill_9_at_any_write_resumes_to_identical_embeddings(tmp_path, compute_calls, pause_at, pending):
    run_paused(_EMBED_CHILD, pause_at, tmp_path, str(tmp_path / "cache"))
    result = embed_dataset(memory_dataset(n=60), PIXELS, cache_root=tmp_path / "cache", chunk_size=7,
                           batch_size=3, num_workers=0)
    assert compute_calls == ([pending] if pending else []) and not result.meta["reused"]
    reference = embed_dataset(memory_dataset(n=60), PIXELS, cache_root=tmp_path / "ref")
    assert np.asarray(result.image_features).tobytes() == np.asarray(reference.image_features).tobytes()
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert left == [] and not (result.folder / "chunks").exists()


def test_features_without_a_valid_sidecar_are_recomputed_not_trusted(tmp_path):
    first = embed_dataset(memory_dataset(n=20), PIXELS, cache_root=tmp_path)
    side = first.folder / "features.npy.json"
    side.unlink()
    again = embed_dataset(memory_dataset(n=20), PIXELS, cache_root=tmp_path)
    assert not again.meta["reused"] and side.exists()
    expected = np.array(again.image_features)
    del first, again  # their memory maps must not see the file truncated below
    features = tmp_path / "embeddings" / embedding_key(memory_dataset(n=20), PIXELS) / "features.npy"
    features.write_bytes(features.read_bytes()[:-64])  # truncated behind the app's back
    with pytest.raises(DataError, match="no complete embeddings"):
        load_embedding(features.parent.name, cache_root=tmp_path)
    repaired = embed_dataset(memory_dataset(n=20), PIXELS, cache_root=tmp_path)
    assert np.asarray(repaired.image_features).tobytes() == expected.tobytes()


def test_too_little_space_for_the_embeddings_fails_before_encoding(tmp_path, monkeypatch, compute_calls):
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StorageError, match=rf"disk space in {tmp_path / 'embeddings'}\S+ to write the "
                                           r"embeddings of 40 images .* \(needs 240.\d KiB, 1000 B free\)"):
        embed_dataset(memory_dataset(), PIXELS, cache_root=tmp_path)
    assert compute_calls == []


_FULL_DISK_CHILD = textwrap.dedent("""
    import argparse, json, os, shutil, sys
    from clipcleaner_core import embed, embed_loader
    from clipcleaner_core.cli import run_handler
    from clipcleaner_core.encoders import EncoderSpec
    from test_embed import memory_dataset
    disk = sys.argv[1]
    filler = os.path.join(disk, "filler")
    real_assemble, real_encode = embed._assemble, embed_loader.encode_chunks

    def disk_fills_up(folder, *args, **kwargs):  # another program fills the disk meanwhile
        with open(filler, "wb", buffering=0) as handle:
            handle.write(bytes(shutil.disk_usage(disk).free - 200_000))
        return real_assemble(folder, *args, **kwargs)

    encoded = []

    def counting(dataset, encoder, chunks, pending, **kwargs):
        encoded.append(list(pending))
        return real_encode(dataset, encoder, chunks, pending, **kwargs)

    embed._assemble, embed_loader.encode_chunks = disk_fills_up, counting
    run = lambda args: embed.embed_dataset(memory_dataset(n=400), EncoderSpec(model="pixels"),
                                           cache_root=disk, chunk_size=64, num_workers=0) and 0
    rc = run_handler(run, argparse.Namespace(verbose=False))
    left = sorted(os.path.relpath(os.path.join(d, f), disk) for d, _, fs in os.walk(disk) for f in fs)
    os.remove(filler)  # free the space: the same command now finishes without encoding again
    embed._assemble = real_assemble
    result = embed.embed_dataset(memory_dataset(n=400), EncoderSpec(model="pixels"),
                                 cache_root=disk, chunk_size=64, num_workers=0)
    print(json.dumps({"rc": rc, "left": left, "encoded": encoded,
                      "features": result.image_features.tobytes().hex()}))
""")


def test_a_disk_filling_up_during_embedding_gives_one_line_and_a_resumable_run(tmp_path):
    disk = tmp_path / "disk"
    done = small_disk(disk, 3 * 1024, [sys.executable, "-c", _FULL_DISK_CHILD, str(disk)])
    assert done.returncode == 0, done.stderr[-3000:]  # no SIGBUS (exit 135), no traceback
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["rc"] == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert re.match(rf"error: not enough disk space in {disk}/embeddings/\w+ to write features.npy "
                    r"\(needs 1\.2 MiB, 1\d\d\.\d KiB free\)", errors[0]), errors[0]
    assert not [name for name in out["left"] if name.endswith(".tmp") or name.endswith("features.npy")]
    assert out["encoded"] == [list(range(7))]  # the second run only assembles
    reference = embed_dataset(memory_dataset(n=400), PIXELS, cache_root=tmp_path / "ref")
    assert bytes.fromhex(out["features"]) == np.asarray(reference.image_features).tobytes()


def test_text_features_are_returned_even_when_the_cache_cannot_be_written(tmp_path, tiny_spec, monkeypatch):
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))
    features = embed_texts(tiny_spec, ["a photo of a cat."], cache_root=tmp_path)
    assert features.shape == (1, 32) and not list((tmp_path / "text_embeddings").glob("*.npy"))


def test_float16_features_are_the_float32_ones_rounded_under_their_own_key(tmp_path):
    from clipcleaner_core import atomic
    from clipcleaner_core.encoders import encoder_identity

    dataset = memory_dataset(n=50)
    full = embed_dataset(dataset, PIXELS, cache_root=tmp_path, chunk_size=16)
    half = embed_dataset(dataset, PIXELS, cache_root=tmp_path, chunk_size=16, dtype="float16")
    assert half.image_features.dtype == np.float16 and half.meta["dtype"] == "float16"
    assert full.image_features.dtype == np.float32 and full.meta["dtype"] == "float32"
    assert np.asarray(half.image_features).tobytes() == \
        np.asarray(full.image_features).astype(np.float16).tobytes()
    assert half.key != full.key and load_embedding(half.key, cache_root=tmp_path).image_features.dtype == np.float16
    old_recipe = atomic.hash_json({"format": 1, "dataset": dataset.content_fingerprint(),
                                   "encoder": encoder_identity(PIXELS)})[:24]
    assert full.key == old_recipe == embedding_key(dataset, PIXELS)  # float32 caches stay valid
    assert (half.folder / "features.npy").stat().st_size < 0.6 * (full.folder / "features.npy").stat().st_size
    with pytest.raises(ConfigError, match="unknown features dtype 'float64'"):
        embed_dataset(dataset, PIXELS, cache_root=tmp_path, dtype="float64")


def test_float16_features_keep_the_clean_set_within_jaccard_0999():
    from clipcleaner_core.api import find_label_issues
    from clipcleaner_core.metrics import make_synthetic_problem

    problem = make_synthetic_problem(n=4000, num_classes=20, dim=128, noise_rate=0.4, spread=1.2, seed=3)
    clean = {}
    for dtype in (np.float32, np.float16):
        table = find_label_issues(problem["features"].astype(dtype), problem["labels"],
                                  text_features=problem["text_features"],
                                  text_labels=problem["text_labels"], seed=0)
        clean[dtype] = set(np.flatnonzero(table["is_clean"].to_numpy(dtype=bool)))
    both, either = clean[np.float32] & clean[np.float16], clean[np.float32] | clean[np.float16]
    assert 1000 < len(clean[np.float32]) < 4000  # a real selection, not all or nothing
    assert len(both) / len(either) >= 0.999
