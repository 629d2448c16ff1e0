"""Evaluation and report of a reproduction: accuracy on extra test sets, ``results.json`` / ``results.md``.

:func:`imagenet_val_accuracy` scores a finished run's checkpoints on WebVision's second test set;
:func:`build_results` puts our accuracies beside the published ones (:data:`~.presets.PAPER_RESULTS`)
and :func:`results_markdown` renders them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from clipcleaner_core.presets import paper_result

log = logging.getLogger(__name__)


def imagenet_val_accuracy(config, train_config, run, cache_root) -> dict | None:
    """Top-1 of the best and last weights on the ImageNet validation images of the 50 classes."""
    from clipcleaner_core.data.webvision import find_imagenet_val, load_imagenet_val

    folder = Path(config.imagenet_val) if config.imagenet_val else find_imagenet_val(config.root)
    if folder is None:
        log.warning("no ImageNet validation folder (ROOT/imagenet_val or --imagenet-val): ILSVRC12 skipped")
        return None
    test = load_imagenet_val(folder)
    return {name: _accuracy(train_config, run, weights, test, cache_root)
            for name, weights in (("best", "best.safetensors"), ("last", "last.safetensors"))} | {"n": len(test)}


def _accuracy(train_config, run, weights: str, test, cache_root) -> float:
    import torch

    from clipcleaner_core.train.config import HEAD_BACKBONES, resolve_config
    from clipcleaner_core.train.loaders import Batches, sequential_batches
    from clipcleaner_core.train.models import build_model

    resolved = resolve_config(train_config)
    labels = test.labels
    if resolved.backbone in HEAD_BACKBONES:
        from clipcleaner_core.embed import embed_dataset
        from clipcleaner_core.encoders import EncoderSpec

        embedding = embed_dataset(test, EncoderSpec(model=resolved.model, pretrained=resolved.pretrained),
                                  cache_root=cache_root, allow_download=False)
        valid = np.asarray(embedding.valid, dtype=bool)
        inputs, labels = np.asarray(embedding.image_features, dtype=np.float32)[valid], labels[valid]
        feature_dim = inputs.shape[1]
    else:
        inputs, feature_dim = tuple(str(test.abspath(i)) for i in range(len(test))), None
    state, _ = run.load_weights(weights)
    model = build_model(resolved.backbone, num_classes=test.num_classes, feature_dim=feature_dim,
                        hidden=resolved.hidden)
    model.load_state_dict(state)
    device = torch.device("cuda" if torch.cuda.is_available() and resolved.device != "cpu" else "cpu")
    model.to(device).eval()
    batches = Batches(inputs, device=device, image_size=resolved.image_size, train=False,
                      num_workers=resolved.num_workers)
    correct = 0
    with torch.no_grad():
        for x, idx in batches(sequential_batches(len(labels), 256)):
            correct += int((model(x).argmax(1).cpu().numpy() == labels[idx]).sum())
    return correct / max(len(labels), 1)


def build_results(config, preset, selection, train_config, evaluation) -> dict:
    """The results dict: recipe, overrides, selection metrics and, per test set, our best / last
    accuracy beside the paper's (fractions in [0, 1]; None where unknown)."""
    from clipcleaner_core.train.config import HEAD_BACKBONES

    published = paper_result(config.preset, config.noise_rate if config.noise else None)
    overrides = {k: getattr(config, k) for k in ("backbone", "epochs", "batch_size", "image_size", "subsample")
                 if getattr(config, k) is not None}
    if config.model != "ViT-B-32" or config.pretrained != "openai":
        overrides["clip"] = f"{config.model} ({config.pretrained})"
    if (preset.paper_backbone and "pretrained" in preset.paper_backbone
            and train_config.backbone in ("resnet18", "resnet50") and not _has_imagenet_weights(train_config)):
        overrides["imagenet_weights"] = f"none found: {train_config.backbone} trained from scratch"
    tests = {}
    for name, values in evaluation["tests"].items():
        paper = (published or {}).get(name)
        tests[name] = {"ours_best": values.get("best"), "ours_last": values.get("last"), "n": values.get("n"),
                       "paper": paper / 100 if paper is not None else None}
    return {
        "dataset": config.dataset, "noise": config.noise, "preset": config.preset,
        "recipe": {"theta_gmm": preset.theta_gmm, "theta_cons": preset.theta_cons, "beta": train_config.beta,
                   "theta_r": train_config.theta_r, "theta_r2": train_config.theta_r2,
                   "epochs": train_config.epochs, "batch_size": train_config.batch_size,
                   "backbone": train_config.backbone,
                   "image_size": None if train_config.backbone in HEAD_BACKBONES else train_config.image_size,
                   "paper_backbone": preset.paper_backbone, "source": preset.source},
        "overrides": overrides, "is_paper_recipe": not overrides,
        "selection": selection["metrics"], "tests": tests,
        "final_set_size": evaluation.get("final_set_size"),
        "final_label_precision": evaluation.get("final_label_precision"),
    }


def _has_imagenet_weights(train_config) -> bool:
    """Whether the trainer finds local ImageNet weights for a torchvision backbone."""
    from clipcleaner_core.train.models import _find_imagenet_weights

    return _find_imagenet_weights(train_config.backbone, train_config.backbone_weights) is not None


def results_markdown(results: dict) -> str:
    """The results as a short Markdown report."""
    pct = _percent
    sel = results["selection"]
    lines = [f"# CLIPCleaner reproduction: {results['dataset']}"
             + (f" ({results['noise']})" if results["noise"] else ""), "",
             f"Preset `{results['preset']}` ({results['recipe']['source']}); backbone "
             f"{results['recipe']['backbone']} "
             + (f"at {results['recipe']['image_size']} px" if results["recipe"]["image_size"]
                else "on the CLIP features")
             + (f" (the paper: {results['recipe']['paper_backbone']})" if results["recipe"]["paper_backbone"] else "")
             + f", {results['recipe']['epochs']} epochs.", ""]
    if results["overrides"]:
        lines += [f"**Not the paper's recipe**: overridden {json.dumps(results['overrides'])}.", ""]
    lines += ["| test set | ours (best epoch) | ours (last epoch) | paper |", "|---|---|---|---|"]
    for name, values in results["tests"].items():
        lines.append(f"| {name} | {pct(values['ours_best'])} | {pct(values['ours_last'])} | {pct(values['paper'])} |")
    lines += ["", f"Selection: kept {sel['kept']} of {sel['n']} samples "
              f"({pct(sel['kept'] / sel['n'] if sel['n'] else None)} %)"
              + (f"; precision {pct(sel['precision'])} %, recall {pct(sel['recall'])} %"
                 + (f" (measured on {sel['truth']})" if sel.get("truth") else "")
                 if sel.get("precision") is not None else "; no ground truth, so no precision / recall") + ".", ""]
    return "\n".join(lines)


def _percent(value) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"
