"""Embedding on every local GPU through torchrun, watched from the calling process; run here with two
CPU processes (gloo): per-rank progress, the same features as one process, cancel stops the job."""
import numpy as np
import pytest
from PIL import Image

from clipcleaner_core.data import load_dataset
from clipcleaner_core.embed import embed_dataset
from clipcleaner_core.embed_launch import can_launch, embed_command, embed_on_local_gpus
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.errors import Cancelled

PIXELS = EncoderSpec(model="pixels")


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rng = np.random.default_rng(0)
    for i in range(90):
        folder = tmp_path / "data" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return load_dataset(str(tmp_path / "data"))


def test_two_processes_report_per_rank_progress_and_give_the_single_process_features(tmp_path, dataset):
    seen, totals = [], []
    result = embed_on_local_gpus(dataset, PIXELS, nproc=2, device="cpu", cache_root=tmp_path / "cache",
                                 on_ranks=seen.append, progress=lambda s, d, t, r: totals.append((s, d, t)))
    assert result.meta["world_size"] == 2
    reference = embed_dataset(dataset, PIXELS, cache_root=tmp_path / "one", num_workers=0)
    assert np.asarray(result.image_features).tobytes() == np.asarray(reference.image_features).tobytes()
    assert all(len(ranks) == 2 for ranks in seen) and seen  # one entry per rank at every poll
    final = seen[-1]
    assert sum(r.total for r in final) == 90 and all(r.done == r.total for r in final)
    assert totals and all(stage == "embed" and done <= total for stage, done, total in totals)


@pytest.mark.slow  # two launches (~15 s)
def test_cancel_stops_every_process_and_a_second_launch_finishes(tmp_path, dataset):
    with pytest.raises(Cancelled, match="run it again"):
        embed_on_local_gpus(dataset, PIXELS, nproc=2, device="cpu", cache_root=tmp_path / "cache",
                            cancel=lambda: True)
    assert not list((tmp_path / "cache").glob("embeddings/*/features.npy.json"))
    result = embed_on_local_gpus(dataset, PIXELS, nproc=2, device="cpu", cache_root=tmp_path / "cache")
    assert result.valid.all() and len(result) == 90


def test_the_command_line_names_the_dataset_and_encoder_and_refuses_what_it_cannot_express(dataset):
    tiny = EncoderSpec(model="ViT-B-32", pretrained="/w/model.safetensors")
    argv = embed_command(dataset, tiny, nproc=4, batch_size=256, progress_dir="/p", device="cuda")
    assert argv[argv.index("--nproc-per-node=4") + 1:argv.index("embed")] == ["-m", "clipcleaner_core"]
    for flag, value in (("--data", dataset.spec), ("--format", "imagefolder"), ("--model", "ViT-B-32"),
                        ("--pretrained", "/w/model.safetensors"), ("--batch-size", "256")):
        assert argv[argv.index(flag) + 1] == value
    assert can_launch(dataset, tiny) and not can_launch(dataset, EncoderSpec(precision="fp16"))
    assert not can_launch(dataset.replace(spec=""), PIXELS)  # uploaded: no spec to reopen it from
