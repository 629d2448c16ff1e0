"""``reproduce`` end to end on CPU: a tiny CLIP, a few epochs, generated trees in the paper's layouts."""
import json

import numpy as np
import pandas as pd
import pytest

import paper_layouts
from clipcleaner_core import cli, reproduce as reproduce_module
from clipcleaner_core.errors import Cancelled, CLIPCleanerError, DataError, WeightsUnavailableError
from clipcleaner_core.presets import PRESET_TABLE
from clipcleaner_core.reproduce import ReproduceConfig, reproduce
from clipcleaner_core.testing import make_tiny_clip
from clipcleaner_core.train.rundir import RunDir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny"))


def _config(tiny, dataset, root, **overrides):
    name, weights = tiny
    values = dict(dataset=dataset, root=str(root), model=name, pretrained=str(weights), backbone="linear",
                  epochs=2, device="cpu", num_workers=0)
    values.update(overrides)
    return ReproduceConfig(**values)


def test_animal10n_end_to_end_then_a_rerun_skips_every_stage(tiny, tmp_path, monkeypatch):
    root = paper_layouts.animal10n(tmp_path / "ANIMAL-10N")
    out, cache = tmp_path / "run", tmp_path / "cache"
    said = []
    results = reproduce(_config(tiny, "animal10n", root), out, cache_root=cache,
                        progress=lambda stage, done, total, rate: said.append((stage, done, total)))
    assert [s for s in said if s[0] == "reproduce"] == [("reproduce", k, 4) for k in (1, 2, 3, 4)]
    assert ("embed", 30, 30) in said and ("epoch", 2, 2) in said, said
    assert results["preset"] == "animal10n" and results["recipe"]["theta_r2"] == 0.95
    assert results["recipe"]["beta"] == 0.5 and not results["is_paper_recipe"]
    test = results["tests"]["test"]
    assert test["n"] == 20 and 0.0 <= test["ours_best"] <= 1.0 and test["paper"] is None
    assert results["selection"]["n"] == 30 and "precision" not in results["selection"]  # no truth
    table = pd.read_csv(out / "selection.csv")
    assert len(table) == 30 and table["is_clean"].sum() == results["selection"]["kept"]
    assert RunDir(out / "train", writer=False).read_status()["state"] == "finished"
    report = (out / "results.md").read_text()
    assert "Not the paper's recipe" in report and "| test |" in report
    assert json.loads((out / "results.json").read_text()) == results

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("clipcleaner_core.pipeline.prepare", must_not_run)
    monkeypatch.setattr("clipcleaner_core.train.trainer.train", must_not_run)
    assert reproduce(_config(tiny, "animal10n", root), out, cache_root=cache) == results


def test_a_killed_run_resumes_training_from_its_last_epoch(tiny, tmp_path, monkeypatch):
    root = paper_layouts.animal10n(tmp_path / "a")
    out, cache = tmp_path / "run", tmp_path / "cache"
    from clipcleaner_core.train import trainer

    real_save, saved = trainer._save_epoch, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt  # the process is killed after epoch 2 of 3

    monkeypatch.setattr(trainer, "_save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        reproduce(_config(tiny, "animal10n", root, epochs=3), out, cache_root=cache)
    assert (out / "selection.json").exists() and not (out / "results.json").exists()
    monkeypatch.setattr(trainer, "_save_epoch", real_save)
    monkeypatch.setattr("clipcleaner_core.pipeline.prepare",
                        lambda *a, **k: pytest.fail("the selection was made before the kill"))
    results = reproduce(_config(tiny, "animal10n", root, epochs=3), out, cache_root=cache)
    metrics = RunDir(out / "train", writer=False).read_metrics()
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert "resuming" in (out / "train" / "train.log").read_text()
    assert results["tests"]["test"]["ours_last"] == metrics[-1]["test_acc"]


def test_cancel_stops_between_stages_and_a_rerun_resumes(tiny, tmp_path, monkeypatch):
    root = paper_layouts.animal10n(tmp_path / "a")
    out, cache, seen = tmp_path / "run", tmp_path / "cache", []
    with pytest.raises(Cancelled, match="reproduction cancelled"):
        reproduce(_config(tiny, "animal10n", root, epochs=1), out, cache_root=cache,
                  progress=lambda stage, done, total, rate: seen.append((stage, done)),
                  cancel=lambda: ("reproduce", 2) in seen)
    assert (out / "selection.json").exists() and not (out / "train").exists()
    monkeypatch.setattr("clipcleaner_core.pipeline.prepare",
                        lambda *a, **k: pytest.fail("the selection was made before the cancel"))
    results = reproduce(_config(tiny, "animal10n", root, epochs=1), out, cache_root=cache)
    assert results["tests"]["test"]["n"] == 20


def test_other_settings_in_the_same_folder_are_refused(tiny, tmp_path):
    root = paper_layouts.animal10n(tmp_path / "a")
    reproduce(_config(tiny, "animal10n", root, epochs=1), tmp_path / "run", cache_root=tmp_path / "c")
    with pytest.raises(CLIPCleanerError, match=r"differs in \['epochs'\]"):
        reproduce(_config(tiny, "animal10n", root, epochs=2), tmp_path / "run", cache_root=tmp_path / "c")


def test_cifar_symmetric_reports_precision_recall_and_the_papers_number(tiny, tmp_path):
    root = paper_layouts.cifar10(tmp_path / "cifar", per_batch=8)
    results = reproduce(_config(tiny, "cifar10", root, noise="sym:0.5", epochs=1, batch_size=8),
                        tmp_path / "run", cache_root=tmp_path / "c")
    sel = results["selection"]
    assert results["preset"] == "cifar10-sym" and 0 <= sel["precision"] <= 1 and 0 <= sel["recall"] <= 1
    assert sel["true_noise_rate"] > 0 and results["tests"]["test"]["n"] == 8
    assert PRESET_TABLE["cifar10-sym"].backbone == "preact_resnet18" and results["overrides"]["backbone"] == "linear"
    saved = list((tmp_path / "run").glob("noise-sym-0.5-0.json"))
    assert saved, "the noisy labels are saved with the run, not in the dataset folder"
    from clipcleaner_core.reproduce import results_markdown

    paper = dict(results, preset="cifar100-sym", tests={"test": {**results["tests"]["test"], "paper": 0.752}})
    assert "| 75.20 |" in results_markdown(paper)


def test_cifar10_idn_file_uses_its_preset_and_checks_the_labels(tiny, tmp_path):
    root = paper_layouts.cifar10(tmp_path / "cifar")
    from clipcleaner_core.data import load_dataset

    labels = load_dataset(root).labels
    noisy = (labels + (np.arange(len(labels)) % 4 == 0)) % 10
    good = paper_layouts.cifar10_idn_csv(tmp_path / "dependent0.4.csv", labels, noisy)
    config = _config(tiny, "cifar10", root, noise=f"file:{good}", epochs=1)
    assert config.preset == "cifar10-idn" and config.noise_rate == 0.4
    results = reproduce(config, tmp_path / "run", cache_root=tmp_path / "c")
    assert results["recipe"]["theta_r"] == 1.0 and results["selection"]["true_noise_rate"] == 0.25
    bad = paper_layouts.cifar10_idn_csv(tmp_path / "dependent0.3.csv", (labels + 1) % 10, noisy)
    with pytest.raises(DataError, match="line 2: label"):
        reproduce(_config(tiny, "cifar10", root, noise=f"file:{bad}", epochs=1), tmp_path / "run2",
                  cache_root=tmp_path / "c")


def test_red_mini_imagenet_precision_from_the_web_annotations(tiny, tmp_path):
    root = paper_layouts.red_mini_imagenet(tmp_path / "mini-imagenet", per_class=1, flip_every=2)
    names = [line.split()[0].split(".")[0] for line in (root / "split" / "red_noise_nl_0.4").read_text().splitlines()]
    entries = [[{"image/id": n, "image/class/label/is_clean": 0}] for n in names[::2]]
    (root / "mini-imagenet-annotations.json").write_text(json.dumps({"data": entries}))
    results = reproduce(_config(tiny, "red-mini-imagenet", root, noise="red:0.4", epochs=1),
                        tmp_path / "run", cache_root=tmp_path / "c")
    sel = results["selection"]
    assert sel["true_noise_rate"] == 0.5 and 0 <= sel["precision"] <= 1
    assert results["recipe"]["beta"] == 4.0 and results["tests"]["test"]["n"] == 100
    with pytest.raises(DataError, match="red_noise_nl_0.0, red_noise_nl_0.4"):
        reproduce(_config(tiny, "red-mini-imagenet", root, noise="red:0.6"), tmp_path / "r2",
                  cache_root=tmp_path / "c")


def test_webvision_reports_both_test_sets(tiny, tmp_path):
    root = paper_layouts.webvision(tmp_path / "WebVision", per_class=1)
    results = reproduce(_config(tiny, "webvision", root, epochs=1), tmp_path / "run", cache_root=tmp_path / "c")
    assert set(results["tests"]) == {"webvision", "ilsvrc12"}
    assert results["tests"]["webvision"]["paper"] == pytest.approx(0.816)
    assert results["tests"]["ilsvrc12"]["paper"] == pytest.approx(0.778)
    assert results["tests"]["ilsvrc12"]["n"] == 50 and 0 <= results["tests"]["ilsvrc12"]["ours_best"] <= 1
    assert results["recipe"]["theta_r2"] == 1.0 and PRESET_TABLE["webvision"].theta_cons == 1.0


def test_clothing1m_trains_on_a_balanced_subsample_of_the_full_list(tiny, tmp_path):
    root = paper_layouts.clothing1m(tmp_path / "clothing1M")
    keys = (root / "noisy_train_key_list.txt").read_text().split()
    checked = [f"{k} {(i // 3 + (i % 2)) % 14}" for i, k in enumerate(keys) if i % 3 < 2]  # half wrong
    with open(root / "clean_label_kv.txt", "a") as kv:
        kv.write("\n".join(checked) + "\n")
    out = tmp_path / "run"
    results = reproduce(_config(tiny, "clothing1m", root, subsample=28, epochs=1), out, cache_root=tmp_path / "c")
    table = pd.read_csv(out / "selection.csv")
    assert results["selection"]["n"] == 28 and len(table) == 28 and table["index"].max() < 42
    from clipcleaner_core.data import load_dataset

    full = load_dataset(root)  # the table's rows index the full training list the trainer loads
    assert [full.paths[i] for i in table["index"]] == table["path"].tolist()
    assert json.loads((out / "train" / "config.json").read_text())["run"]["train_rows"] == 28
    assert results["tests"]["test"]["paper"] == pytest.approx(0.749)
    sel = results["selection"]  # truth on the hand-checked part of the subsample only
    assert "hand-checked" in sel["truth"] and 0 <= sel["precision"] <= 1 and 0.3 < sel["true_noise_rate"] < 0.7
    assert "measured on the" in (out / "results.md").read_text()


def test_several_gpus_train_under_torchrun(tiny, tmp_path, monkeypatch):
    root = paper_layouts.animal10n(tmp_path / "a")
    calls = []

    def fake_call(argv):
        calls.append(argv)
        return 1

    monkeypatch.setattr(reproduce_module.subprocess, "call", fake_call)
    with pytest.raises(CLIPCleanerError, match="torchrun training exited with status 1"):
        reproduce(_config(tiny, "animal10n", root, gpus=2), tmp_path / "run", cache_root=tmp_path / "c")
    argv = calls[0]
    assert "--nproc_per_node=2" in argv and argv[argv.index("-m", 3) + 1:][:2] == ["clipcleaner_core", "train"]
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert config["selection"].endswith("selection.csv") and config["theta_r2"] == 0.95


def test_cli_without_the_clip_weights_fails_fast_with_the_weights_message(tmp_path, monkeypatch, capsys):
    root = paper_layouts.animal10n(tmp_path / "a", per_class=(1, 1))
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = cli.main(["reproduce", "--dataset", "animal10n", "--root", str(root), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: Weights for ViT-B-32") and "--pretrained" in last
    with pytest.raises(WeightsUnavailableError):
        reproduce(ReproduceConfig("animal10n", str(root)), tmp_path / "run2", cache_root=tmp_path / "cache")


def test_noise_is_required_where_the_paper_adds_it_and_refused_elsewhere(tmp_path):
    with pytest.raises(DataError, match="sym:RATE"):
        ReproduceConfig("cifar100", str(tmp_path))
    with pytest.raises(DataError, match="already noisy"):
        ReproduceConfig("webvision", str(tmp_path), noise="sym:0.2")


def test_clothing1m_without_imagenet_weights_is_not_the_papers_recipe(tmp_path, monkeypatch):
    from clipcleaner_core.reproduce import build_results, training_config

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached torchvision weights
    config = ReproduceConfig("clothing1m", str(tmp_path))
    preset = PRESET_TABLE["clothing1m"]
    train_config = training_config(config, preset, str(tmp_path), None, tmp_path)
    assert (train_config.backbone, train_config.image_size, train_config.epochs) == ("resnet50", 224, 300)
    results = build_results(config, preset, {"metrics": {}}, train_config, {"tests": {}})
    assert results["overrides"] == {"imagenet_weights": "none found: resnet50 trained from scratch"}
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    assert build_results(config, preset, {"metrics": {}}, train_config, {"tests": {}})["is_paper_recipe"]
