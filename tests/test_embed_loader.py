"""The chunked encoding loop: chunk plans that survive a resume, batches that never straddle chunks,
chunks that are complete only when both files exist, and the rank that wrote each one."""
import json

import numpy as np
import pytest
from PIL import Image

from clipcleaner_core import embed_loader
from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.encoders import EncoderSpec, load_encoder


def memory_dataset(n):
    rng = np.random.default_rng(0)
    return Dataset(name="mem", kind="demo", root=".", class_names=("a", "b"),
                   labels=np.arange(n) % 2, paths=tuple(f"train/{i:05d}" for i in range(n)),
                   images=rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8))


def test_a_resumed_folder_keeps_the_chunk_size_its_first_run_chose(tmp_path):
    assert embed_loader.chunk_plan(tmp_path, 100, 16) == 16
    assert embed_loader.chunk_plan(tmp_path, 100, 64) == 16  # same data: the first plan stands
    assert embed_loader.chunk_plan(tmp_path, 101, 64) == 64  # other data: a new plan


@pytest.mark.parametrize("n, chunk_size, batch_size", [(50, 16, 5), (50, 16, 16), (7, 10, 3)])
def test_batches_cover_the_pending_chunks_and_never_straddle_two(n, chunk_size, batch_size):
    pending = [c for c in range(-(-n // chunk_size)) if c != 1]
    batches = embed_loader._batches(pending, n, chunk_size, batch_size)
    assert all(len({i // chunk_size for i in batch}) == 1 for batch in batches)
    assert all(len(batch) <= batch_size for batch in batches)
    covered = [i for batch in batches for i in batch]
    assert covered == [i for i in range(n) if i // chunk_size in pending]


def test_a_chunk_is_complete_only_with_both_files_and_records_its_rank(tmp_path):
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    embed_loader._write_chunk(tmp_path, 2, features, {7: "corrupt"}, rank=3)
    got, bad = embed_loader.read_chunk(tmp_path, 2)
    np.testing.assert_array_equal(got, features)
    assert bad == {7: "corrupt"} and embed_loader.chunk_rank(tmp_path, 2) == 3
    meta = tmp_path / "00002.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "rows": 4}))
    assert embed_loader.read_chunk(tmp_path, 2) is None  # rows disagree: not complete
    meta.unlink()
    assert embed_loader.read_chunk(tmp_path, 2) is None  # the JSON is written last
    embed_loader._write_chunk(tmp_path, 0, features, {})
    assert embed_loader.chunk_rank(tmp_path, 0) == 0


def test_encode_chunks_writes_only_the_pending_chunks_marked_with_the_rank(tmp_path):
    dataset = memory_dataset(25)
    encoder = load_encoder(EncoderSpec(model="pixels"))
    seen = []
    embed_loader.encode_chunks(dataset, encoder, tmp_path, [1, 3], chunk_size=8, batch_size=3,
                               num_workers=0, rank=1, progress=lambda s, d, t, r: seen.append((d, t)))
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == ["00001.json", "00003.json"]
    assert [embed_loader.chunk_rank(tmp_path, c) for c in (1, 3)] == [1, 1]
    assert seen[0] == (25 - 8 - 1, 25) and seen[-1] == (25, 25)  # rows outside pending count as done
    rows, _ = embed_loader.read_chunk(tmp_path, 3)
    assert rows.shape == (1, 768)  # the last chunk holds the one remaining sample
    expected = encoder.encode_images(encoder.preprocess(Image.fromarray(dataset.images[24]))[None]).numpy()
    np.testing.assert_array_equal(rows, expected)
