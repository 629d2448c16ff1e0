"""The fit's torch path (accel.py) against the NumPy path, run on the CPU.

On a GPU machine ``fit_scores(device="auto")`` runs the probe's loss and gradient, the zero-shot
and probe products and their reductions in torch there; here the same code runs on a CPU torch
device and must give the NumPy path's fit up to float rounding.
"""
import numpy as np
import pytest
import torch

from clipcleaner_core import accel, probe, scoring
from clipcleaner_core.errors import ConfigError
from clipcleaner_core.metrics import make_synthetic_problem
from clipcleaner_core.scoring import ScoringConfig, fit_scores


@pytest.fixture
def torch_on_cpu(monkeypatch):
    """``device="cuda"`` runs the torch path on the CPU."""
    real = accel.fit_device

    def fake(device="auto"):
        return torch.device("cpu") if device == "cuda" else real(device)

    monkeypatch.setattr(accel, "fit_device", fake)


def _problem(n=600, k=6, dim=24, seed=0):
    return make_synthetic_problem(n, k, dim, noise_rate=0.3, spread=1.5, seed=seed)


def test_auto_is_numpy_without_cuda_and_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert accel.fit_device("auto") is None
    assert accel.fit_device("cpu") is None
    with pytest.raises(ConfigError, match="CUDA is not available"):
        accel.fit_device("cuda:0")
    with pytest.raises(ConfigError, match="valid devices: auto, cpu, cuda, cuda:N"):
        fit_scores(np.eye(4, dtype=np.float32), np.arange(4), num_classes=4, device="gpu",
                   config=ScoringConfig(zeroshot=False))


@pytest.mark.parametrize("mode", ["in-sample", "cross-val"])
def test_probe_on_device_matches_numpy(torch_on_cpu, mode):
    p = _problem()
    kwargs = dict(num_classes=6, mode=mode, n_folds=3, seed=1)
    host = probe.fit_probe_predictor(p["features"], p["labels"], device="cpu", **kwargs)
    device = probe.fit_probe_predictor(p["features"], p["labels"], device="cuda", **kwargs)
    assert device.device_rows is not None and host.device_rows is None
    for a, b in zip(host.probes, device.probes):
        np.testing.assert_allclose(a.coef_, b.coef_, atol=2e-3)
    np.testing.assert_allclose(np.exp(host.log_proba(0, 600)),
                               device.log_proba_tensor(0, 600).exp().numpy(), atol=1e-3)
    # the predictor's own device log-probabilities agree with its host ones to rounding
    np.testing.assert_allclose(device.log_proba(0, 600), device.log_proba_tensor(0, 600).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_probe_classes_absent_from_a_fold_get_minus_infinity(torch_on_cpu):
    features = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    labels = np.repeat([0, 1, 3], [15, 15, 10])  # class 2 never seen
    fitted = probe.fit_probe_predictor(features, labels, num_classes=4, device="cuda")
    log_p = fitted.log_proba_tensor(0, 40).numpy()
    assert np.isneginf(log_p[:, 2]).all()
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_fit_scores_on_device_matches_numpy(torch_on_cpu, dtype):
    p = _problem(n=900, k=5, dim=32, seed=3)
    features = p["features"].astype(dtype)
    kwargs = dict(num_classes=5, text_features=p["text_features"], text_labels=p["text_labels"],
                  chunk_rows=128)  # several chunks
    host = fit_scores(features, p["labels"], device="cpu", **kwargs)
    device = fit_scores(features, p["labels"], device="cuda", **kwargs)
    for name in ["zs_consistency", "lr_consistency", "zs_top_probs", "lr_top_probs"]:
        np.testing.assert_allclose(getattr(host, name), getattr(device, name), atol=2e-3,
                                   err_msg=name)
    for name in ["zs_loss_score", "lr_loss_score", "zs_clean_prob", "lr_clean_prob"]:
        np.testing.assert_allclose(getattr(host, name), getattr(device, name), atol=1e-2,
                                   err_msg=name)
    np.testing.assert_array_equal(host.zs_top_classes[:, 0], device.zs_top_classes[:, 0])
    assert (host.suggested_both == device.suggested_both).mean() > 0.995
    from clipcleaner_core.selection import SelectionConfig, select

    same = select(host, SelectionConfig()).clean_mask == select(device, SelectionConfig()).clean_mask
    assert same.mean() > 0.995


def test_zero_shot_on_device_matches_numpy_with_uneven_prompts(torch_on_cpu):
    rng = np.random.default_rng(5)
    features = rng.standard_normal((50, 16)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    text = rng.standard_normal((7, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text_labels = np.array([2, 0, 0, 1, 2, 2, 1])  # 2, 2 and 3 prompts, not sorted
    host = scoring.zero_shot_log_probabilities(features, text, text_labels, num_classes=3)
    source = scoring._ZeroShot(features, text, text_labels, 3, 0.07,
                               accel.DeviceRows(features, torch.device("cpu")))
    np.testing.assert_allclose(source.log_proba_tensor(0, 50).numpy(), host, atol=1e-5)


def test_device_rows_streams_when_the_features_do_not_fit(monkeypatch):
    features = np.arange(60, dtype=np.float16).reshape(20, 3)
    monkeypatch.setattr(accel, "_fits", lambda nbytes, device: False)
    rows = accel.DeviceRows(features, torch.device("cpu"))
    assert rows.resident is None
    np.testing.assert_array_equal(rows.block(2, 5).numpy(), features[2:5].astype(np.float32))
    np.testing.assert_array_equal(rows.take(torch.tensor([4, 1])).numpy(),
                                  features[[4, 1]].astype(np.float32))
    monkeypatch.undo()
    resident = accel.DeviceRows(features, torch.device("cpu"), block_rows=7)
    assert resident.resident.dtype == torch.float16
    np.testing.assert_array_equal(resident.block(0, 20).numpy(), features.astype(np.float32))


def test_auto_does_not_import_torch_on_a_machine_without_a_gpu():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from clipcleaner_core import accel\n"
            "from clipcleaner_core.probe import fit_probe\n"
            "accel._nvidia_driver_present = lambda: False\n"
            "x = np.random.default_rng(0).standard_normal((30, 4)).astype('float32')\n"
            "fit_probe(x, np.arange(30) % 3, num_classes=3)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_finished_fit_hands_cuda_memory_back(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    accel.release(None)
    accel.release(torch.device("cpu"))
    assert not emptied
    accel.release(torch.device("cuda:0"))
    assert emptied == [True]


def test_a_device_out_of_memory_falls_back_to_the_cpu(torch_on_cpu, monkeypatch, caplog):
    p = _problem(n=300, k=3, dim=8, seed=2)
    kwargs = dict(num_classes=3, text_features=p["text_features"], text_labels=p["text_labels"])
    host = fit_scores(p["features"], p["labels"], device="cpu", **kwargs)

    def full(self, start, stop):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(accel.DeviceRows, "block", full)
    with caplog.at_level("WARNING"):
        fallback = fit_scores(p["features"], p["labels"], device="cuda", **kwargs)
    assert "fitting on the CPU instead" in caplog.text and "Tried to allocate" in caplog.text
    np.testing.assert_array_equal(host.lr_consistency, fallback.lr_consistency)
    np.testing.assert_array_equal(host.zs_loss_score, fallback.zs_loss_score)


def test_the_cli_and_the_api_take_the_fit_device(tmp_path):
    from clipcleaner_core import find_label_issues
    from clipcleaner_core.cli import main

    p = _problem(n=120, k=3, dim=8)
    table = find_label_issues(p["features"], p["labels"], device="cpu")
    assert len(table) == 120
    np.save(tmp_path / "x.npy", p["features"])
    np.save(tmp_path / "y.npy", p["labels"])
    args = ["select", "--image-features", str(tmp_path / "x.npy"), "--labels",
            str(tmp_path / "y.npy"), "--out", str(tmp_path / "s.csv")]
    assert main(args + ["--device", "cpu"]) == 0
    if not torch.cuda.is_available():
        assert main(args[:-1] + [str(tmp_path / "t.csv"), "--device", "cuda"]) == 2
        assert not (tmp_path / "t.csv").exists()
