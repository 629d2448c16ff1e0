"""Finding open_clip weights on this machine without touching the network.

``resolve_weights(model, pretrained)`` turns a model name and a pretrained tag, checkpoint file or
``hf-hub:`` id into a local file (or folder). Tags are looked up in the Hugging Face cache
(``huggingface_hub.try_to_load_from_cache``) and open_clip's own URL cache; a download happens only
with ``allow_download=True``. When nothing is found it raises ``WeightsUnavailableError`` whose
message names the fixes, in well under a second (open_clip itself would retry for about a minute).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import difflib
import json
import logging
import os
import socket
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clipcleaner_core.errors import CLIPCleanerError, WeightsUnavailableError

logger = logging.getLogger(__name__)

PIXELS = "pixels"
HF_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
CONFIG_NAME = "open_clip_config.json"
SAFE_WEIGHTS = "open_clip_model.safetensors"
TORCH_WEIGHTS = "open_clip_pytorch_model.bin"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class UnknownModelError(CLIPCleanerError, ValueError):
    """The model name is neither ``pixels``, an open_clip architecture nor an hf-hub/local-dir id."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from.

    Attributes:
        kind: "none" (pixels), "random" (seeded init), "file", "tag", "hf-hub" or "local-dir".
        path: the local checkpoint file ("file", "tag") or model folder ("hf-hub", "local-dir").
        status: short human status: "built-in", "random init", "local file", "cached", "downloaded".
        tag_cfg: open_clip's pretrained config for a tag (mean, std, quick_gelu, ...).
        identity: JSON-serialisable identity of the weights, part of every embedding cache key.
    """

    kind: str
    path: Path | None = None
    status: str = ""
    tag_cfg: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)

    @classmethod
    def none(cls) -> "WeightsSource":
        return cls(kind="none", status="built-in (no weights)", identity={"kind": "none"})

    def create_args(self, model: str) -> tuple[str, dict]:
        """Model name and keyword arguments for ``open_clip.create_model_and_transforms``."""
        if self.kind in ("hf-hub", "local-dir"):
            return f"{LOCAL_DIR_PREFIX}{self.path}", {}
        if self.kind == "random":
            return model, {"pretrained": None}
        kwargs: dict = {"pretrained": str(self.path)}
        if self.kind == "tag":
            cfg = self.tag_cfg
            kwargs.update(
                force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                image_mean=cfg.get("mean"),
                image_std=cfg.get("std"),
                image_interpolation=cfg.get("interpolation"),
                image_resize_mode=cfg.get("resize_mode"),
            )
        return model, kwargs

    def model_config(self, model: str) -> dict:
        import open_clip

        if self.kind in ("hf-hub", "local-dir"):
            return json.loads((self.path / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"]
        return open_clip.get_model_config(model) or {}

    def embed_dim(self, model: str) -> int:
        return int(self.model_config(model)["embed_dim"])


def list_open_clip_models() -> list[tuple[str, str]]:
    """Every (model, pretrained tag) pair open_clip knows, e.g. ``("ViT-B-32", "openai")``."""
    import open_clip

    return [tuple(pair) for pair in open_clip.list_pretrained()]


def weights_status(model: str, pretrained: str | None) -> str:
    """``"cached"``, ``"local file"``, ``"random init"``, ``"built-in (no weights)"`` or
    ``"missing: <reason>"``, without touching the network."""
    if model == PIXELS:
        return WeightsSource.none().status
    try:
        return resolve_weights(model, pretrained, allow_download=False).status
    except WeightsUnavailableError as exc:
        return f"missing: {getattr(exc, 'reason', str(exc))}"
    except UnknownModelError as exc:
        return f"missing: {exc}"


def resolve_weights(model: str, pretrained: str | None, *, allow_download: bool = False) -> WeightsSource:
    """Find the weights for ``model`` / ``pretrained`` locally (or download if allowed)."""
    if model.startswith(HF_PREFIX):
        return _resolve_hf_repo(model[len(HF_PREFIX):], allow_download)
    if model.startswith(LOCAL_DIR_PREFIX):
        return _resolve_local_dir(Path(model[len(LOCAL_DIR_PREFIX):]).expanduser())
    _check_model_name(model)
    if not pretrained:
        return WeightsSource(kind="random", status="random init", identity={"kind": "random", "seed": 0})
    path = Path(pretrained).expanduser()
    if path.is_file():
        return WeightsSource(kind="file", path=path.resolve(), status="local file", identity=_file_identity(path))
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if tag_cfg:
        return _resolve_tag(model, pretrained, tag_cfg, allow_download)
    if pretrained.endswith(CHECKPOINT_SUFFIXES) or os.sep in pretrained:
        _raise_unavailable(model, pretrained, f"checkpoint file {pretrained} does not exist", None)
    tags = open_clip.list_pretrained_tags_by_model(model)
    raise _unavailable(
        f"{pretrained!r} is neither a pretrained tag of {model} nor an existing checkpoint file",
        f"Pretrained {pretrained!r} is neither a known open_clip tag for {model} (known tags: "
        f"{', '.join(tags) or 'none'}) nor an existing checkpoint file. Pass one of those tags, or "
        "a local checkpoint path such as --pretrained /path/to/open_clip_model.safetensors.",
    )


def preprocess_config(model: str, source: WeightsSource) -> dict:
    """The image preprocessing open_clip will apply (size, mean, std, interpolation, resize mode)."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = asdict(PreprocessCfg())
    if source.kind in ("hf-hub", "local-dir"):
        full = json.loads((source.path / CONFIG_NAME).read_text(encoding="utf-8"))
        cfg = merge_preprocess_dict(cfg, full.get("preprocess_cfg", {}))
    elif source.kind == "tag":
        cfg = merge_preprocess_dict(cfg, source.tag_cfg)
    size = source.model_config(model).get("vision_cfg", {}).get("image_size", cfg["size"])
    cfg["size"] = size
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in cfg.items()}


def _check_model_name(model: str) -> None:
    import open_clip

    names = open_clip.list_models()
    if model in names:
        return
    close = difflib.get_close_matches(model, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {model!r}: use 'pixels', an open_clip architecture (e.g. ViT-B-32; "
        f"{len(names)} known, see list_open_clip_models()), 'hf-hub:org/repo' or "
        f"'local-dir:/path'.{hint}"
    )


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    real = Path(os.path.realpath(path))
    return {"kind": "file", "name": path.name, "blob": real.name, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns}


def _tag_files(tag_cfg: dict) -> tuple[str, list[str]]:
    """HF repo and candidate file names (safetensors first) for an open_clip pretrained config."""
    repo, filename = os.path.split(tag_cfg.get("hf_hub", ""))
    if not repo:
        return "", []
    if not filename:
        return repo, [SAFE_WEIGHTS, TORCH_WEIGHTS]
    stem, suffix = os.path.splitext(filename)
    names = [stem + ".safetensors"] if suffix in (".bin", ".pth", ".pt") else []
    return repo, names + [filename]


def _hf_cached(repo: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _resolve_tag(model: str, tag: str, tag_cfg: dict, allow_download: bool) -> WeightsSource:
    repo, names = _tag_files(tag_cfg)
    for name in names:
        found = _hf_cached(repo, name)
        if found is not None:
            return _tag_source(model, tag, tag_cfg, found, "cached")
    url = tag_cfg.get("url", "")
    url_cache = Path("~/.cache/clip").expanduser() / os.path.basename(url) if url else None
    if url_cache is not None and url_cache.is_file():
        return _tag_source(model, tag, tag_cfg, url_cache, "cached")
    if allow_download:
        import open_clip

        what = f"{model} / {tag}"
        check_network(_hub_endpoint() if repo else url, what)
        logger.info("downloading weights for %s (this can be several hundred MB)", what)
        with _download_errors(what):
            path = Path(open_clip.pretrained.download_pretrained(tag_cfg))
        return _tag_source(model, tag, tag_cfg, path, "downloaded")
    where = f"{repo}/{names[0]}" if repo else url
    _raise_unavailable(model, tag, f"{where} is not in the local cache", (repo, names[0]) if repo else None)


def _tag_source(model: str, tag: str, tag_cfg: dict, path: Path, status: str) -> WeightsSource:
    identity = {**_file_identity(path), "kind": "tag", "model": model, "tag": tag}
    identity.pop("mtime_ns")
    return WeightsSource(kind="tag", path=path, status=status, tag_cfg=dict(tag_cfg), identity=identity)


def _resolve_hf_repo(repo: str, allow_download: bool) -> WeightsSource:
    config = _hf_cached(repo, CONFIG_NAME)
    weights = next((p for p in (_hf_cached(repo, n) for n in (SAFE_WEIGHTS, TORCH_WEIGHTS)) if p), None)
    status = "cached"
    if (config is None or weights is None) and allow_download:
        from huggingface_hub import hf_hub_download

        check_network(_hub_endpoint(), HF_PREFIX + repo)
        with _download_errors(HF_PREFIX + repo):
            config = Path(hf_hub_download(repo, CONFIG_NAME))
            try:
                weights = Path(hf_hub_download(repo, SAFE_WEIGHTS))
            except Exception:  # noqa: BLE001 - older repos only ship the torch file
                weights = Path(hf_hub_download(repo, TORCH_WEIGHTS))
        status = "downloaded"
    if config is None or weights is None or config.parent != weights.parent:
        _raise_unavailable(HF_PREFIX + repo, None, f"{repo} is not in the local cache", (repo, SAFE_WEIGHTS))
    identity = {**_file_identity(weights), "kind": "hf-hub", "repo": repo}
    identity.pop("mtime_ns")
    return WeightsSource(kind="hf-hub", path=config.parent, status=status, identity=identity)


def _resolve_local_dir(folder: Path) -> WeightsSource:
    config = folder / CONFIG_NAME
    weights = next((folder / n for n in (SAFE_WEIGHTS, TORCH_WEIGHTS) if (folder / n).is_file()), None)
    if not config.is_file() or weights is None:
        raise _unavailable(
            f"{folder} lacks {CONFIG_NAME} or weights",
            f"Model folder {folder} must contain {CONFIG_NAME} and {SAFE_WEIGHTS} (or "
            f"{TORCH_WEIGHTS}); copy both from the model's Hugging Face repo.",
        )
    return WeightsSource(kind="local-dir", path=folder.resolve(), status="local file",
                         identity={**_file_identity(weights), "kind": "local-dir"})


NETWORK_PROBE_SECONDS = 5.0
"""How long the connectivity probe before a download waits (open_clip alone retries for ~a minute)."""


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def check_network(url: str, what: str, *, timeout: float = NETWORK_PROBE_SECONDS) -> None:
    """Raise WeightsUnavailableError within ``timeout`` seconds when ``url``'s host (or the HTTPS
    proxy in the environment) cannot be reached, or when HF_HUB_OFFLINE forbids downloads."""
    from huggingface_hub import constants

    fix = (f"copy the weights for {what} from a connected machine and pass --pretrained "
           "/path/to/open_clip_model.safetensors, or use --model pixels")
    if constants.HF_HUB_OFFLINE:
        raise _unavailable("HF_HUB_OFFLINE is set", f"Cannot download the weights for {what}: "
                           f"HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) forbids downloads. Unset it "
                           f"to download, or {fix}.")
    target = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(target.scheme or "https")
    via = ""
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, via = proxy_url.hostname, proxy_url.port or 8080, f" through the proxy {proxy}"
    else:
        host, port = target.hostname, target.port or (443 if target.scheme != "http" else 80)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        attempt = pool.submit(_connect, host, port, timeout)
        try:
            error = attempt.result(timeout=timeout + 0.5)  # name lookup has no timeout of its own
        except concurrent.futures.TimeoutError:
            error = f"no answer within {timeout:g} s"
        finally:
            pool.shutdown(wait=False)
    if error:
        raise _unavailable(f"the network is unreachable ({error})",
                           f"Cannot download the weights for {what}: the network is unreachable "
                           f"({host}:{port}{via}: {error}). Connect this machine, or {fix}.")


def _connect(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def _download_errors(what: str):
    """Turn any failure of a download into a WeightsUnavailableError naming the fix."""
    try:
        yield
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - requests, httpx, hub and OS errors alike
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(f"download failed ({text})",
                           f"Downloading the weights for {what} failed: {text[:300]}. Check the "
                           "connection and the free space, or pass a local checkpoint with "
                           "--pretrained /path/to/open_clip_model.safetensors.") from None


def _unavailable(reason: str, message: str) -> WeightsUnavailableError:
    error = WeightsUnavailableError(message)
    error.reason = reason
    return error


def _raise_unavailable(model: str, pretrained: str | None, reason: str, hf_file) -> None:
    from huggingface_hub import constants

    what = f"{model} with pretrained={pretrained!r}" if pretrained else model
    if hf_file:
        repo, filename = hf_file
        warm = (f"warm the Hugging Face cache on a connected machine with `hf download {repo} "
                f"{filename}`, copy its cache folder ({constants.HF_HUB_CACHE}, or $HF_HUB_CACHE) "
                "to the same place here and set HF_HUB_OFFLINE=1")
    else:
        warm = "download the checkpoint on a connected machine and copy it here"
    arg = f"--model {model} " if model.startswith(HF_PREFIX) else ""
    message = (
        f"Weights for {what} are not available on this machine ({reason}) and downloads are off: "
        "nothing is fetched unless you ask. Fix it one of these ways: pass a local checkpoint, e.g. "
        f"--pretrained /path/to/open_clip_model.safetensors (safetensors, or torch weights loaded "
        f"with weights_only=True); or {warm}; or allow the download explicitly {arg}with "
        "--allow-download (several hundred MB); or use --model pixels, which needs no weights "
        "(no zero-shot scores)."
    )
    raise _unavailable(reason, message)
