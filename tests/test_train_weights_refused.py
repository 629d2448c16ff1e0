"""A malicious or wrong --backbone-weights file is refused with one line, never run, no traceback."""
import pickle

import pytest
import torch

from clipcleaner_core.errors import WeightsUnavailableError
from clipcleaner_core.train.models import build_model



class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if it were ever unpickled


def test_cli_refuses_a_pickle_that_carries_code(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "resnet18.pth"
    marker = tmp_path / "pwned"
    with open(weights, "wb") as handle:
        pickle.dump({"conv1.weight": _Payload(str(marker))}, handle)
    from clipcleaner_core.cli import main

    code = main(["train", "--data", "demo", "--backbone", "resnet18", "--backbone-weights",
                 str(weights), "--epochs", "1", "--out", str(tmp_path / "run")])
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot be loaded safely" in lines[0] and str(weights) in lines[0]
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "list"])
def test_files_that_are_not_state_dicts_are_refused(tmp_path, content):
    path = tmp_path / "w.pth"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsUnavailableError, match=str(path)):
        build_model("resnet18", num_classes=3, backbone_weights=str(path))


def test_weights_of_the_wrong_shapes_are_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, path)
    with pytest.raises(WeightsUnavailableError, match="does not hold resnet18 weights"):
        build_model("resnet18", num_classes=3, backbone_weights=str(path))
