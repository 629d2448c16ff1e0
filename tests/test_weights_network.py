"""--allow-download without a network ends in one line saying so, in seconds, not a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipcleaner_core.errors import WeightsUnavailableError
from clipcleaner_core.weights import check_network

ROOT = Path(__file__).resolve().parent.parent


def _offline_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if "proxy" not in k.lower() and k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # every request goes to a proxy on a closed local port: unreachable on any machine
    return {**env, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}


def test_allow_download_without_a_network_says_the_network_is_unreachable(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "clipcleaner_core", "embed", "--data", "demo",
                           "--model", "ViT-B-32", "--pretrained", "openai", "--allow-download"],
                          cwd=tmp_path, env=_offline_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "network is unreachable" in lines[0], proc.stderr
    assert "127.0.0.1:9" in lines[0] and "--pretrained" in lines[0]


def test_hf_hub_offline_forbids_the_download_with_a_message(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match=r"HF_HUB_OFFLINE=1 \(or TRANSFORMERS_OFFLINE=1\) forbids downloads"):
        check_network("https://huggingface.co", "ViT-B-32 / openai")


def test_an_unreachable_host_is_reported_with_its_name(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for key in list(os.environ):
        if "proxy" in key.lower():
            monkeypatch.delenv(key)
    with pytest.raises(WeightsUnavailableError, match=r"network is unreachable \(127.0.0.1:9"):
        check_network("https://127.0.0.1:9/weights.bin", "tiny")
