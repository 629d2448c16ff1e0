"""The fit's heavy products in torch on a GPU (DESIGN §2 steps 3-6).

On a CPU the fit runs in NumPy (``probe.py``, ``scoring.py``). With a CUDA device the same
arithmetic runs in torch there: the features are uploaded once (float16 stays float16 and is
converted per block) when they fit in half of the device's free memory, else each row block is
copied when it is read; the probe's loss and gradient, the zero-shot and probe log-probabilities
and their per-sample reductions (own log-probability, consistency, top-k, the class the mean of
both sources ranks first) run on the device, and only per-sample vectors come back. The optimizer
(SciPy's L-BFGS-B on K x (D + 1) parameters) and the preconditioner stay on the host.

Nothing here runs unless a device is asked for: ``fit_device("auto")`` is None (the NumPy path)
on a machine without CUDA. Tests run the torch path on the CPU by handing the fit a CPU torch
device and compare it with the NumPy path.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .errors import ConfigError

#: share of the device's free memory the uploaded features may take
RESIDENT_FRACTION = 0.5
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def fit_device(device: str | None = "auto"):
    """The torch device the fit's products run on, or None for the NumPy path on the CPU.

    ``"auto"``: the first CUDA device when torch sees one, else None; ``"cpu"`` (or None): None;
    ``"cuda"`` / ``"cuda:N"``: that device, or :class:`~clipcleaner_core.errors.ConfigError` when
    CUDA is not available.

    Examples
    --------
    >>> from clipcleaner_core.accel import fit_device
    >>> fit_device("cpu") is None
    True
    >>> fit_device("tpu")
    Traceback (most recent call last):
    ...
    clipcleaner_core.errors.ConfigError: unknown fit device 'tpu'; valid devices: auto, cpu, cuda, cuda:N.
    """
    if device is None or device == "cpu":
        return None
    if not isinstance(device, str) or not (device == "auto" or device == "cuda"
                                           or (device.startswith("cuda:")
                                               and device[5:].isdecimal())):
        raise ConfigError(f"unknown fit device {device!r}; valid devices: "
                          f"{', '.join(DEVICE_CHOICES)}.")
    if device == "auto" and "torch" not in sys.modules and not _nvidia_driver_present():
        return None  # no GPU: the NumPy path, without importing torch (~1 s, ~0.5 GB)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; a NumPy-only install still fits
        if device == "auto":
            return None
        raise ConfigError(f"device {device!r} needs torch with CUDA; use cpu.") from None
    if not torch.cuda.is_available():
        if device == "auto":
            return None
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu "
                          "or auto.")
    return torch.device("cuda" if device == "auto" else device)


def _nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver loaded (what torch's CUDA needs)."""
    return any(os.path.exists(path) for path in
               ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg"))  # dxg: WSL2


class DeviceRows:
    """Row blocks of an (N, D) host array as float32 tensors on ``device``.

    The whole array is uploaded once when it fits in ``RESIDENT_FRACTION`` of the device's free
    memory (in float16 when the host array is float16, float32 otherwise), in row blocks so the
    host never holds a converted copy; otherwise every read copies its rows.
    """

    def __init__(self, features: np.ndarray, device, *, block_rows: int = 65_536):
        import torch

        self.features, self.device = features, device
        self.n, self.dim = features.shape
        half = features.dtype == np.float16
        host_dtype = np.float16 if half else np.float32
        nbytes = self.n * self.dim * np.dtype(host_dtype).itemsize
        self.resident = None
        if _fits(nbytes, device):
            self.resident = torch.empty((self.n, self.dim), device=device,
                                        dtype=torch.float16 if half else torch.float32)
            for lo in range(0, self.n, block_rows):
                block = np.ascontiguousarray(features[lo:lo + block_rows], dtype=host_dtype)
                self.resident[lo:lo + block.shape[0]] = torch.from_numpy(block).to(device)

    def block(self, start: int, stop: int):
        """Rows ``start:stop`` as a (stop - start, D) float32 tensor on the device."""
        import torch

        if self.resident is not None:
            return self.resident[start:stop].float()
        host = np.ascontiguousarray(self.features[start:stop], dtype=np.float32)
        return torch.from_numpy(host).to(self.device)

    def take(self, index):
        """Rows ``index`` (an int64 tensor on the device) as a float32 tensor on the device."""
        import torch

        if self.resident is not None:
            return self.resident.index_select(0, index).float()
        host = np.ascontiguousarray(self.features[index.cpu().numpy()], dtype=np.float32)
        return torch.from_numpy(host).to(self.device)


def _fits(nbytes: int, device) -> bool:
    import torch

    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_FRACTION * free


def out_of_memory_errors() -> tuple:
    """The exceptions a device that ran out of memory raises (torch's, when torch is loaded)."""
    torch = sys.modules.get("torch")
    error = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return (MemoryError,) if error is None else (MemoryError, error)


def release(device) -> None:
    """Hand the memory a finished fit freed on ``device`` back to the driver (torch keeps freed
    blocks cached for itself otherwise, and a training job started next on the same GPU would
    find gigabytes held by an idle app process)."""
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def to_device(array: np.ndarray, device, dtype=None):
    """A host array as a tensor on ``device`` (optionally converted first)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)).to(device)
