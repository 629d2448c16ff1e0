"""Test helpers: a tiny open_clip model that loads through the same path as real weights.

``make_tiny_clip`` writes a 2-layer, width-64, 32-pixel CLIP config (standard tokenizer: vocab
49408, context 77) beside randomly initialised weights in a safetensors file. Loading it with
``EncoderSpec(model=name, pretrained=weights_path)`` exercises exactly the checkpoint-loading code
that real open_clip weights use, in about 0.1 s and with no network.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_tiny_clip(
    folder: str | os.PathLike, *, name: str = "tiny-clip", seed: int = 0
) -> tuple[str, Path]:
    """Write and register a tiny open_clip model; return ``(model_name, weights_path)``.

    The config is written to ``<folder>/<name>.json`` and registered with
    ``open_clip.add_model_config`` (open_clip names the model after the file); the seeded random
    weights go to ``<folder>/<name>.safetensors``. Calling it again with the same seed writes
    identical weights.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=2), encoding="utf-8")
    open_clip.add_model_config(config_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None, pretrained_text=False)
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    weights_path = folder / f"{name}.safetensors"
    save_file(state, str(weights_path))
    return name, weights_path
