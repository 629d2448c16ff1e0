"""Encoders: local weights only, exact round trips, fast and helpful failures, pixel baseline."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from clipcleaner_core.encoders import (
    EncoderSpec,
    encoder_identity,
    list_open_clip_models,
    load_encoder,
    weights_status,
)
from clipcleaner_core.errors import CLIPCleanerError, WeightsUnavailableError
from clipcleaner_core.testing import make_tiny_clip
from clipcleaner_core.weights import UnknownModelError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny"))


def _images(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def _encode(encoder, images):
    return encoder.encode_images(torch.stack([encoder.preprocess(im) for im in images])).numpy()


def test_tiny_clip_round_trip_through_safetensors_is_exact(tiny):
    name, weights = tiny
    first = load_encoder(EncoderSpec(model=name, pretrained=str(weights)))
    second = load_encoder(EncoderSpec(model=name, pretrained=str(weights)))
    features = _encode(first, _images())
    assert features.shape == (4, 32) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(features, _encode(second, _images()))
    assert first.has_text and first.dim == 32
    text = first.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert text.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)


def test_torch_checkpoint_loads_with_weights_only_and_matches_safetensors(tiny, tmp_path):
    from safetensors.torch import load_file

    name, weights = tiny
    pt_path = tmp_path / "tiny.pt"
    torch.save({"state_dict": load_file(str(weights))}, pt_path)
    from_pt = load_encoder(EncoderSpec(model=name, pretrained=str(pt_path)))
    from_st = load_encoder(EncoderSpec(model=name, pretrained=str(weights)))
    np.testing.assert_array_equal(_encode(from_pt, _images()), _encode(from_st, _images()))
    assert weights_status(name, str(pt_path)) == "local file"


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.target),))


def test_pickled_code_in_a_checkpoint_is_never_run(tiny, tmp_path):
    _Payload.target = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": _Payload()}, bad)
    with pytest.raises(CLIPCleanerError, match="weights_only"):
        load_encoder(EncoderSpec(model=tiny[0], pretrained=str(bad)))
    assert not _Payload.target.exists()


def test_missing_pretrained_tag_fails_fast_naming_the_fixes():
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder(EncoderSpec(model="ViT-B-32", pretrained="openai"))
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "--pretrained /path/to/open_clip_model.safetensors" in message
    assert "HF_HUB_OFFLINE=1" in message and "timm/vit_base_patch32_clip_224.openai" in message
    assert "--model pixels" in message and "\n" not in message
    assert weights_status("ViT-B-32", "openai").startswith("missing: ")


def test_unknown_tag_lists_known_tags_and_unknown_model_suggests_names(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="laion2b_s34b_b79k"):
        load_encoder(EncoderSpec(model="ViT-B-32", pretrained="no-such-tag"))
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_encoder(EncoderSpec(model="ViT-B-32", pretrained=str(tmp_path / "gone.safetensors")))
    with pytest.raises(UnknownModelError, match="ViT-B-32"):
        load_encoder(EncoderSpec(model="ViT-B-3", pretrained="openai"))
    with pytest.raises(CLIPCleanerError, match="precision"):
        EncoderSpec(model="pixels", precision="fp8")


def test_hf_hub_model_missing_from_cache_fails_fast():
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE=1"):
        load_encoder(EncoderSpec(model="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"))


def test_a_warm_hub_cache_is_used_offline(tiny, tmp_path, monkeypatch):
    import open_clip.pretrained as pretrained_mod
    from huggingface_hub import constants

    name, weights = tiny
    snapshot = tmp_path / "hub" / "models--test--tiny-clip" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(weights.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(pretrained_mod._PRETRAINED, name, {"warm": {"hf_hub": "test/tiny-clip/"}})
    assert weights_status(name, "warm") == "cached"
    encoder = load_encoder(EncoderSpec(model=name, pretrained="warm"))
    reference = load_encoder(EncoderSpec(model=name, pretrained=str(weights)))
    np.testing.assert_array_equal(_encode(encoder, _images()), _encode(reference, _images()))
    assert encoder.identity()["weights"]["kind"] == "tag"


def test_random_init_is_seeded_so_its_embeddings_can_be_cached(tiny):
    first = load_encoder(EncoderSpec(model=tiny[0]))
    second = load_encoder(EncoderSpec(model=tiny[0]))
    np.testing.assert_array_equal(_encode(first, _images()), _encode(second, _images()))
    assert weights_status(tiny[0], None) == "random init"


def test_pixels_encoder_needs_no_weights_and_has_no_text_tower():
    encoder = load_encoder(EncoderSpec(model="pixels"))
    assert not encoder.has_text and encoder.dim == 768
    assert encoder.identity()["weights"] == {"kind": "none"}
    assert encoder.identity()["preprocess"]["kind"] == "pixels"
    features = _encode(encoder, _images())
    assert features.shape == (4, 768)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    brighter = _encode(encoder, [Image.fromarray(np.clip(np.asarray(im, np.int16) + 20, 0, 255)
                                                 .astype(np.uint8)) for im in _images()])
    assert np.all(np.sum(features * brighter, axis=1) > 0.95)  # centred: brightness barely matters
    with pytest.raises(CLIPCleanerError, match="no text tower"):
        encoder.encode_text(["a photo of a cat."])


def test_identity_without_loading_matches_loaded_encoder(tiny):
    spec = EncoderSpec(model=tiny[0], pretrained=str(tiny[1]))
    assert encoder_identity(spec) == load_encoder(spec).identity()
    assert encoder_identity(EncoderSpec()) == load_encoder(EncoderSpec()).identity()


def test_list_open_clip_models_offline():
    models = list_open_clip_models()
    assert ("ViT-B-32", "openai") in models and all(len(pair) == 2 for pair in models)


def test_hf_hub_model_from_a_warm_cache_loads_offline(tiny, tmp_path, monkeypatch):
    import json

    from huggingface_hub import constants

    from clipcleaner_core.testing import TINY_CLIP_CONFIG

    name, weights = tiny
    snapshot = tmp_path / "hub" / "models--test--tiny-hub" / "snapshots" / ("b" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(weights.read_bytes())
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("b" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights_status("hf-hub:test/tiny-hub", None) == "cached"
    encoder = load_encoder(EncoderSpec(model="hf-hub:test/tiny-hub"))
    reference = load_encoder(EncoderSpec(model=name, pretrained=str(weights)))
    np.testing.assert_allclose(_encode(encoder, _images()), _encode(reference, _images()), atol=1e-6)
    assert encoder.encode_text(["a cat"]).shape == (1, 32)
    from_dir = load_encoder(EncoderSpec(model=f"local-dir:{snapshot}"))
    assert from_dir.identity()["weights"]["kind"] == "local-dir"
