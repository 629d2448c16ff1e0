"""Backbones: PreAct ResNet-18 shapes and a training step; heads; local-only ImageNet weights."""
import json

import pytest
import torch

from clipcleaner_core.errors import WeightsUnavailableError
from clipcleaner_core.train import PreActResNet18, TrainConfig, build_model, train
from clipcleaner_core.train.loaders import image_transforms

from train_helpers import blobs


def test_preact_resnet18_maps_32px_images_to_class_logits():
    model = PreActResNet18(num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    params = sum(p.numel() for p in model.parameters())
    assert 11_000_000 < params < 11_300_000  # the standard PreAct ResNet-18 size


def test_preact_resnet18_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = PreActResNet18(num_classes=3)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_cifar_augmentation_keeps_the_image_size():
    from PIL import Image

    image = Image.new("RGB", (32, 32), (120, 30, 200))
    assert image_transforms(32, train=True)(image).shape == (3, 32, 32)
    assert image_transforms(224, train=False)(Image.new("RGB", (300, 260))).shape == (3, 224, 224)


def test_preact_backbone_trains_one_epoch_on_in_memory_images(tmp_path):
    dataset, _, table = blobs(n=50, images=True)
    result = train(TrainConfig(data="blobs", backbone="preact_resnet18", epochs=1, batch_size=16),
                   run_dir=tmp_path / "cnn", dataset=dataset, selection=table)
    assert result.state == "finished" and result.metrics[0]["test_acc"] is not None
    config = json.loads((tmp_path / "cnn" / "config.json").read_text())
    assert config["image_size"] == 32 and config["lr"] == 0.02  # the paper's CNN schedule


def test_heads_standardise_their_inputs_and_mlp_has_a_hidden_layer():
    linear = build_model("linear", num_classes=5, feature_dim=8)
    mlp = build_model("mlp", num_classes=5, feature_dim=8, hidden=16)
    assert linear(torch.randn(2, 8)).shape == mlp.eval()(torch.randn(2, 8)).shape == (2, 5)
    assert "0.mean" in linear.state_dict() and mlp[1].out_features == 16


def test_resnet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torchvision cache
    model = build_model("resnet18", num_classes=7)
    assert model.fc.out_features == 7
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("resnet18", num_classes=7, backbone_weights=str(tmp_path / "missing.pth"))


def test_resnet_loads_local_torchvision_weights(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", num_classes=4, backbone_weights=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight) and model.fc.out_features == 4
