"""The device decode path (JPEGs decoded and preprocessed as tensors, nvJPEG on CUDA), run on the CPU:
its preprocessing matches the PIL path within one 8-bit level, and every file it cannot take goes
through the CPU path with the same failure reasons."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from clipcleaner_core import embed_loader, gpu_decode
from clipcleaner_core.data.dataset import Dataset
from clipcleaner_core.data.images import load_image
from clipcleaner_core.encoders import EncoderSpec, load_encoder
from clipcleaner_core.testing import make_tiny_clip

LEVEL = 1 / 255  # one 8-bit level, in [0, 1] pixel units


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    name, weights = make_tiny_clip(tmp_path_factory.mktemp("tiny"))
    return {"tiny": load_encoder(EncoderSpec(model=name, pretrained=str(weights), device="cpu")),
            "pixels": load_encoder(EncoderSpec(model="pixels"))}


def _picture(height, width, seed=0):
    """Smooth gradients plus noise: resampling differences show, JPEG blocks do not dominate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([(xx * 3) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
    return np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)


def _jpeg(pixels, **options):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _pixel_units(difference, preprocess):
    """Undo the normalisation: differences in [0, 1] pixel units, per channel."""
    std = torch.tensor(preprocess.std or (1.0, 1.0, 1.0)).view(3, 1, 1)
    return difference.abs() * std


@pytest.mark.parametrize("kind", ["tiny", "pixels"])
@pytest.mark.parametrize("shape", [(50, 70), (200, 120), (33, 33), (480, 640)])
def test_device_preprocessing_on_cpu_tensors_matches_the_pil_path_within_one_level(encoders, kind, shape):
    from torchvision.io import ImageReadMode, decode_jpeg

    encoder = encoders[kind]
    preprocess = gpu_decode.device_preprocess_for(encoder)
    assert preprocess is not None
    data = _jpeg(_picture(*shape))
    decoded = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    pil = load_image(data)
    assert torch.equal(decoded, torch.from_numpy(np.array(pil)).permute(2, 0, 1))  # same libjpeg
    expected = encoder.preprocess(pil)
    got = preprocess(decoded)
    assert got.shape == expected.shape == (3, *encoder.input_shape[1:]) and got.dtype == torch.float32
    error = _pixel_units(got - expected, preprocess)
    assert error.max() <= LEVEL * 1.001 and error.mean() <= LEVEL / 4


def test_a_preprocessing_step_without_a_device_version_keeps_the_cpu_path(encoders):
    from torchvision import transforms

    class Rotated:
        preprocess = transforms.Compose([transforms.Resize(32), transforms.RandomRotation(10)])

    assert gpu_decode.device_preprocess_for(Rotated()) is None


def _mixed_dataset(folder):
    """JPEGs the device takes, and files it must hand to the CPU path."""
    pixels = _picture(40, 56, seed=1)
    files = {
        "plain.jpg": _jpeg(pixels),
        "grey.jpg": _jpeg(pixels[..., 0]),
        "picture.png": None,
        "rotated.jpg": None,
        "truncated.jpg": _jpeg(pixels)[:400],
        "garbage.jpg": b"\xff\xd8\xff" + bytes(300) + b"\xff\xd9",
        "refused.jpg": _jpeg(_picture(48, 48, seed=2), progressive=True),
        "empty.jpg": b"",
    }
    for name, data in files.items():
        if name == "picture.png":
            Image.fromarray(pixels).save(folder / name)
        elif name == "rotated.jpg":
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(pixels).save(folder / name, "JPEG", quality=90, exif=exif)
        else:
            (folder / name).write_bytes(data)
    names = tuple(files)
    return Dataset(name="mixed", kind="imagefolder", root=folder, class_names=("x",),
                   labels=np.zeros(len(names), dtype=np.int64), paths=names)


def test_files_the_device_cannot_take_go_through_the_cpu_path_with_the_same_reasons(
        tmp_path, encoders, monkeypatch):
    import torchvision.io

    dataset = _mixed_dataset(tmp_path)
    encoder = encoders["tiny"]
    refused = (tmp_path / "refused.jpg").stat().st_size
    real_decode = torchvision.io.decode_jpeg

    def device_decoder(data, **kwargs):  # like nvJPEG refusing one file of the batch
        for one in data if isinstance(data, list) else [data]:
            if one.numel() == refused:
                raise RuntimeError("nvjpegDecode failed: unsupported")
        return real_decode(data, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", device_decoder)
    batches = [list(range(len(dataset)))]
    assert gpu_decode.jpeg_bytes(tmp_path / "plain.jpg") is not None
    for name in ("picture.png", "rotated.jpg", "truncated.jpg", "garbage.jpg"):
        assert gpu_decode.jpeg_bytes(tmp_path / name) is None, name
    kinds = [gpu_decode.DeviceDecodeSource(embed_loader.ImageSource(
        dataset, encoder.preprocess, encoder.input_shape))[i][1] for i in range(len(dataset))]
    assert kinds == ["jpeg", "jpeg", "ready", "ready", "ready", "ready", "jpeg", "ready"]
    (_, cpu_images, cpu_reasons), = list(embed_loader.make_loader(dataset, encoder, batches, 0, device_decode=False))
    (_, dev_images, dev_reasons), = list(embed_loader.make_loader(dataset, encoder, batches, 0, device_decode=True))
    assert dev_reasons == cpu_reasons  # the bad-files table lists the same failures
    assert [bool(r) for r in cpu_reasons] == [False, False, False, False, True, True, False, True]
    preprocess = gpu_decode.device_preprocess_for(encoder)
    for row, name in enumerate(dataset.paths):
        if kinds[row] == "jpeg" and name != "refused.jpg":
            assert _pixel_units(dev_images[row] - cpu_images[row], preprocess).max() <= LEVEL * 1.001
        else:  # decoded by PIL on both paths: identical
            assert torch.equal(dev_images[row], cpu_images[row]), name


def _features_by_decode(dataset, encoder, folder, modes, *, num_workers):
    """((features, bad rows) of one cache chunk holding the whole dataset) per ``device_decode``
    mode, in the order given."""
    out = []
    for device_decode in modes:
        chunks = folder / f"chunks-{device_decode}"
        chunks.mkdir()
        embed_loader.encode_chunks(dataset, encoder, chunks, [0], chunk_size=len(dataset), batch_size=4,
                                   num_workers=num_workers, device_decode=device_decode)
        out.append(embed_loader.read_chunk(chunks, 0))
    return out


def test_embedding_through_the_device_path_on_cpu_gives_nearly_the_same_features(tmp_path, encoders):
    dataset = _mixed_dataset(tmp_path)
    encoder = encoders["tiny"]
    (cpu, cpu_bad), (dev, dev_bad) = _features_by_decode(dataset, encoder, tmp_path, (False, True),
                                                          num_workers=0)
    assert cpu_bad == dev_bad and sorted(cpu_bad) == [4, 5, 7]
    cosine = (cpu * dev).sum(axis=1)
    assert np.all(cosine[[0, 1, 2, 3, 6]] > 0.999) and not dev[[4, 5, 7]].any()


def test_prefetching_yields_the_same_batches_in_order_and_passes_errors_on(tmp_path, encoders):
    import threading

    dataset = _mixed_dataset(tmp_path)
    encoder = encoders["tiny"]
    source = embed_loader.ImageSource(dataset, encoder.preprocess, encoder.input_shape)
    batcher = gpu_decode.DeviceBatcher(gpu_decode.device_preprocess_for(encoder), source, "cpu")
    items = gpu_decode.DeviceDecodeSource(source)
    batches = [gpu_decode.collate([items[i] for i in rows]) for rows in ([0, 1, 2], [3, 4], [5, 6, 7])]
    direct = [batcher(batch) for batch in batches]
    ahead = list(gpu_decode.prefetched(iter(batches), batcher, depth=1))
    assert [b[0].tolist() for b in ahead] == [b[0].tolist() for b in direct] == [[0, 1, 2], [3, 4], [5, 6, 7]]
    assert all(torch.equal(a[1], d[1]) and a[2] == d[2] for a, d in zip(ahead, direct))

    def failing():
        yield batches[0]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(gpu_decode.prefetched(failing(), batcher))
    stream = gpu_decode.prefetched(iter(batches * 20), batcher, depth=1)
    next(stream)
    stream.close()  # leaving early (a cancel) stops the helper thread
    assert not [t for t in threading.enumerate() if t.name == "device-decode"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_nvjpeg_decoding_matches_the_pil_path_within_three_levels(encoders):
    """nvJPEG's IDCT may round differently from libjpeg-turbo: allow three 8-bit levels."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoder = encoders["tiny"]
    preprocess = gpu_decode.device_preprocess_for(encoder)
    data = [_jpeg(_picture(h, w, seed=h)) for h, w in ((50, 70), (200, 120), (480, 640))]
    decoded = decode_jpeg([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data],
                          mode=ImageReadMode.RGB, device="cuda")
    for one, image in zip(data, decoded):
        assert image.device.type == "cuda"
        expected = encoder.preprocess(load_image(one))
        got = preprocess(image).cpu()
        error = _pixel_units(got - expected, preprocess)
        assert error.max() <= 3 * LEVEL and error.mean() <= LEVEL


@pytest.mark.gpu
@needs_cuda
def test_embedding_on_cuda_decodes_on_the_gpu_and_keeps_the_cpu_paths_failures(tmp_path, tmp_path_factory):
    name, weights = make_tiny_clip(tmp_path_factory.mktemp("tiny-cuda"))
    encoder = load_encoder(EncoderSpec(model=name, pretrained=str(weights), device="cuda", precision="fp32"))
    dataset = _mixed_dataset(tmp_path)
    # None: the default on CUDA, i.e. decoded on the GPU
    (cpu, cpu_bad), (dev, dev_bad) = _features_by_decode(dataset, encoder, tmp_path, (False, None),
                                                          num_workers=2)
    assert cpu_bad == dev_bad and sorted(cpu_bad) == [4, 5, 7]
    assert np.all((cpu * dev).sum(axis=1)[[0, 1, 2, 3, 6]] > 0.998)
