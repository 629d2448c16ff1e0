"""Embedding under torchrun (2 CPU processes, gloo): the chunks shared out between the ranks, the same
features as one process, resumable after a rank is killed, one clear error when a rank fails, and
two "nodes" meeting through a multi-node rendezvous on 127.0.0.1."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipcleaner_core.data import load_dataset
from clipcleaner_core.embed import embed_dataset
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.testing import TINY_CLIP_CONFIG, make_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 240
CHUNK = 32  # 8 chunks: ranks 0 and 1 take four each


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An ImageFolder of N_IMAGES small JPEGs in 3 classes, and the tiny CLIP as a local-dir model."""
    base = tmp_path_factory.mktemp("ddp_embed")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = base / "data" / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (20 + i % 9, 28, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    _, weights = make_tiny_clip(base / "tiny")
    model_dir = base / "tiny-dir"
    model_dir.mkdir()
    (model_dir / "open_clip_model.safetensors").write_bytes(weights.read_bytes())
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    return base / "data", f"local-dir:{model_dir}"


def _env(cache):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "OMP_NUM_THREADS": "1", "CLIPCLEANER_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def _embed_args(data, model, *, verbose=False):
    return [*(["-v"] if verbose else []), "embed", "--data", str(data), "--model", model,
            "--device", "cpu", "--batch-size", "8", "--chunk-size", str(CHUNK)]


def _launch(cmd, env):
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        out, err = proc.communicate()
        pytest.fail(f"torchrun timed out (a hang):\n{err[-3000:]}")
    return proc.returncode, out, err


def _torchrun(args, cache, *, nproc=2, script=None, timeout=240):
    target = [str(script)] if script else ["-m", "clipcleaner_core"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           *target, *args]
    return _wait(_launch(cmd, _env(cache)), timeout)


def _single(data, model, cache):
    """The reference: the same dataset embedded by this process alone."""
    dataset = load_dataset(str(data))
    return embed_dataset(dataset, EncoderSpec(model=model), cache_root=cache, chunk_size=CHUNK,
                         batch_size=8, num_workers=0)


def _result(cache):
    (sidecar,) = list(Path(cache).glob("embeddings/*/features.npy.json"))
    folder = sidecar.parent
    return (np.load(folder / "features.npy"), np.load(folder / "valid.npy"),
            json.loads(sidecar.read_text()))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("encoder", ["pixels", pytest.param("tiny", marks=pytest.mark.slow)])
def test_two_ranks_share_the_chunks_and_match_one_process_bit_for_bit(tmp_path, files, encoder):
    data, tiny = files
    model = "pixels" if encoder == "pixels" else tiny
    rc, out, err = _torchrun(_embed_args(data, model), tmp_path / "ddp")
    assert rc == 0, err[-3000:]
    printed = json.loads(out)  # rank 0 alone prints the summary
    assert printed["world_size"] == 2 and printed["status"] == "written" and printed["n"] == N_IMAGES
    features, valid, meta = _result(tmp_path / "ddp")
    assert meta["world_size"] == 2 and meta["chunk_ranks"] == [0, 1] * 4
    reference = _single(data, model, tmp_path / "one")
    assert meta["key"] == reference.key and reference.meta["chunk_ranks"] == [0] * 8
    assert features.tobytes() == np.asarray(reference.image_features).tobytes()
    np.testing.assert_array_equal(valid, reference.valid)
    assert not (tmp_path / "ddp" / "embeddings" / meta["key"] / "chunks").exists()
    if encoder == "pixels":  # every rank reuses it
        rc, out, err = _torchrun(_embed_args(data, model), tmp_path / "ddp")
        assert rc == 0 and json.loads(out)["status"] == "reused", err[-3000:]


KILL_RANK_1 = textwrap.dedent("""
    import os, signal, sys
    from clipcleaner_core import embed_loader
    from clipcleaner_core.cli import main

    real_write = embed_loader._write_chunk

    def write_then_die(chunks, chunk, features, bad, rank=0):
        real_write(chunks, chunk, features, bad, rank)
        if rank == 1 and chunk >= 3:  # rank 1 dies after its second chunk (1, 3) is saved
            os.kill(os.getpid(), signal.SIGKILL)

    embed_loader._write_chunk = write_then_die
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow  # 2 torchrun launches (~40 s); `pytest -m slow`
def test_a_rank_killed_mid_run_then_the_job_rerun_resumes_to_the_same_features(tmp_path, files):
    data, tiny = files
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1)
    cache = tmp_path / "ddp"
    rc, _, err = _torchrun(_embed_args(data, tiny), cache, script=script)
    assert rc != 0  # torchrun stops the job when a worker dies
    assert not list(cache.glob("embeddings/*/features.npy.json"))
    saved = sorted(p.name for p in cache.glob("embeddings/*/chunks/*.json") if p.name != "plan.json")
    assert {"00001.json", "00003.json"} <= set(saved) and len(saved) < 8
    rc, out, err = _torchrun(_embed_args(data, tiny, verbose=True), cache)
    assert rc == 0, err[-3000:]
    redone = sum(int(n) for n in re.findall(r"rank \d: embedding (\d+) chunks", err))
    assert redone == 8 - len(saved)  # only the chunks nobody finished
    features, _, meta = _result(cache)
    assert meta["chunk_ranks"] == [0, 1] * 4
    reference = _single(data, tiny, tmp_path / "one")
    assert features.tobytes() == np.asarray(reference.image_features).tobytes()


FAIL_RANK_1 = textwrap.dedent("""
    import os, sys
    from clipcleaner_core import embed_loader
    from clipcleaner_core.cli import main

    phase, missing = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    if os.environ["RANK"] == "1":
        if phase == "load":  # this node does not see the dataset at all
            args[args.index("--data") + 1] = missing
        else:  # this node's mount goes away while it embeds
            def unreadable(dataset, encoder, chunks, pending, **kw):
                raise PermissionError(13, "Permission denied", missing)
            embed_loader.encode_chunks = unreadable
    sys.exit(main(args))
""")


@pytest.mark.parametrize("phase", [pytest.param("load", marks=pytest.mark.slow), "encode"])
def test_a_rank_that_cannot_read_the_dataset_is_named_on_every_rank_and_nothing_is_assembled(
        tmp_path, files, phase):
    data, _ = files
    script = tmp_path / "fail_rank_1.py"
    script.write_text(FAIL_RANK_1)
    missing = tmp_path / "not-mounted" / "data"
    rc, _, err = _torchrun([phase, str(missing), *_embed_args(data, "pixels")], tmp_path / "ddp",
                           script=script)
    assert rc != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    step = "loading the dataset" if phase == "load" else "embedding the chunks"
    assert len(errors) == 2, err[-3000:]  # one line from each rank, naming rank 1 and the path
    for rank, line in zip(sorted(range(2)), sorted(errors, key=lambda e: "this is rank 1" in e)):
        assert f"error: {step} failed on rank 1 of 2 (this is rank {rank}): rank 1 on " in line
        assert str(missing) in line
    assert not re.search(r'File ".*clipcleaner_core', err)  # torchrun's own report, no worker traceback
    assert not list((tmp_path / "ddp").glob("embeddings/*/features.npy*"))


@pytest.mark.slow  # two torchrun "nodes" (~25 s)
def test_two_nodes_meet_through_a_multi_node_rendezvous(tmp_path, files):
    data, tiny = files
    port = _free_port()
    env = _env(tmp_path / "ddp")
    nodes = [_launch([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                      "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
                      "-m", "clipcleaner_core", *_embed_args(data, tiny)], env) for rank in (0, 1)]
    results = [_wait(node) for node in nodes]
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-2000:] + results[1][2][-2000:]
    assert json.loads(results[0][1])["world_size"] == 2 and results[1][1] == ""  # node 1: rank 1
    features, _, meta = _result(tmp_path / "ddp")
    assert meta["chunk_ranks"] == [0, 1] * 4
    reference = _single(data, tiny, tmp_path / "one")
    assert features.tobytes() == np.asarray(reference.image_features).tobytes()


@pytest.mark.slow  # a torchrun launch plus a fit (~20 s)
def test_run_under_torchrun_embeds_on_both_ranks_and_fits_on_rank_0(tmp_path, files):
    data, _ = files
    out = tmp_path / "scores.csv"
    args = ["run", "--data", str(data), "--model", "pixels", "--device", "cpu", "--batch-size", "8",
            "--out", str(out)]
    rc, printed, err = _torchrun(args, tmp_path / "ddp")
    assert rc == 0, err[-3000:]
    assert json.loads(printed)["out"] == str(out)  # one summary: rank 1 exits after the embedding
    table = pd.read_csv(out)
    assert len(table) == N_IMAGES and table["is_clean"].any()
    _, _, meta = _result(tmp_path / "ddp")
    assert meta["world_size"] == 2
