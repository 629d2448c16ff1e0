"""The training loop of DESIGN §3: balanced sampling, mixup, soft CE, SGD, relabel-and-grow.

:func:`train` is the one public entry point. It resolves the config, builds the training rows and
start set (:mod:`.data`), trains epoch by epoch, evaluates on the test split, applies the MixFix
step, and writes the run folder (:mod:`.rundir`) after every epoch, so a stopped run resumes from
its last finished epoch and gets the same result as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipcleaner_core import atomic
from clipcleaner_core.errors import Cancelled, CLIPCleanerError
from clipcleaner_core.progress import Cancel, Progress, RateMeter, notify
from clipcleaner_core.train.config import TrainConfig, resolve_config, resume_key
from clipcleaner_core.train.data import TrainData, load_train_data
from clipcleaner_core.train.distributed import Distributed
from clipcleaner_core.train.loaders import Batches, sequential_batches
from clipcleaner_core.train.mixfix import balanced_batches, mixup, relabel_and_grow, soft_cross_entropy, step_lr
from clipcleaner_core.train.models import build_model
from clipcleaner_core.train.rundir import BEST, LAST, RunDir, cpu_state_dict

log = logging.getLogger(__name__)

EVAL_BATCH = 512
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class RunResult:
    """What a finished run ended with (a cancelled one raises instead); accuracies are in [0, 1]."""

    run_dir: Path
    state: str
    epochs_done: int
    best_test_acc: float | None
    final_test_acc: float | None
    metrics: list[dict]
    config: TrainConfig
    test_labels: str
    resumed_from_epoch: int = 0


@dataclass
class _State:
    """What changes from epoch to epoch (and what a resume restores)."""

    epoch: int  # epochs finished
    in_set: np.ndarray
    labels: np.ndarray
    best_acc: float = -1.0
    best_epoch: int | None = None


def default_run_dir(config: TrainConfig, dataset_fingerprint: str) -> Path:
    from clipcleaner_core.paths import cache_dir

    key = atomic.hash_json({"config": resume_key(config), "data": dataset_fingerprint})[:16]
    return cache_dir() / "runs" / key


def train(
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    dataset=None,
    features: np.ndarray | None = None,
    selection=None,
    cache_root: str | Path | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> RunResult:
    """Train ``config.backbone`` on the cleaned set and write the run folder.

    Parameters
    ----------
    config
        the run's settings; ``None`` schedule fields come from the preset (see
        :func:`~clipcleaner_core.train.config.resolve_config`).
    run_dir
        the run folder (default: ``<cache>/runs/<config hash>``). An existing folder
        with a last checkpoint of the same config is resumed; one of another config is refused.
    dataset
        a loaded :class:`~clipcleaner_core.data.dataset.Dataset` (default: ``config.data``).
    features
        (N, D) per-sample features for the linear / MLP heads (default: embedded with
        ``config.model``, cached).
    selection
        a score table DataFrame (index, is_clean, final_label); default:
        ``config.selection`` or the default thresholds.
    progress
        ``progress(stage, done, total, rate)`` (:mod:`clipcleaner_core.progress`):
        the preparation's stages ("embed", "probe", ...), then ``"train"`` in SGD steps of
        the whole run and ``"epoch"`` in finished epochs; the epoch's metrics are in the log
        and ``metrics.jsonl``.
    cancel
        polled between batches; True stops the run, marks ``status.json`` "cancelled"
        (the last finished epoch stays the resume point) and raises
        :class:`~clipcleaner_core.errors.Cancelled`.

    Returns
    -------
    :class:`RunResult` of the finished run.

    Raises
    ------
    Cancelled
        when ``cancel()`` returned True; running the same call again resumes.
    """
    ctx = Distributed.setup(config.device)
    early = RunDir(run_dir, writer=ctx.is_main) if run_dir is not None else None
    try:
        try:
            if early is not None:  # the UI sees the run while it embeds and selects
                early.write_status("running", epoch=0, epochs=config.epochs or 0, stage="preparing")
            dataset, config, data = _prepare(ctx, config, dataset, features, selection, cache_root,
                                             progress, cancel)
        except BaseException as exc:
            if early is not None:
                _record_failure(early, exc, epoch=0, epochs=config.epochs or 0)
            raise
        folder = Path(run_dir) if run_dir is not None else default_run_dir(config, dataset.fingerprint())
        run = RunDir(folder, writer=ctx.is_main)
        package_log, level = logging.getLogger("clipcleaner_core"), None
        handler = run.log_handler() if ctx.is_main else None
        if handler is not None:
            level = package_log.level
            package_log.addHandler(handler)
            package_log.setLevel(logging.INFO)
        try:
            return _run(ctx, config, data, run, progress, cancel)
        finally:
            if handler is not None:
                package_log.removeHandler(handler)
                package_log.setLevel(level)
                handler.close()
    finally:
        ctx.close()


def _prepare(ctx, config, dataset, features, selection, cache_root, progress, cancel=None):
    """(dataset, resolved config, TrainData): load, add noise, resolve, select."""
    if dataset is None:
        from clipcleaner_core.data import load_dataset

        dataset = load_dataset(config.data)
    dataset = _with_noise(dataset, config.noise)
    config = resolve_config(config, dataset_kind=dataset.kind)
    return dataset, config, _load_in_rank_order(ctx, config, dataset, features, selection, cache_root,
                                                progress, cancel)


def _with_noise(dataset, noise: str | None):
    """The dataset with the synthetic noise the selection was made on (unless already applied)."""
    if not noise or dataset.noise is not None:
        return dataset
    from clipcleaner_core.data import apply_noise, parse_noise_spec

    spec = parse_noise_spec(noise)
    return dataset if spec is None else apply_noise(dataset, spec)


def _load_in_rank_order(ctx, config, dataset, features, selection, cache_root, progress,
                        cancel=None) -> TrainData:
    """Rank 0 embeds and selects first (filling the cache); the other ranks then read the cache."""
    if not ctx.is_main:
        ctx.barrier()
    data = load_train_data(config, dataset=dataset, features=features, selection=selection,
                           cache_root=cache_root, progress=progress if ctx.is_main else None,
                           cancel=cancel)
    if ctx.is_main:
        ctx.barrier()
    return data


def _build(ctx, config, data):
    """A seeded fresh model on the device, its SGD optimizer and (CUDA only) gradient scaler."""
    torch.manual_seed(config.seed)
    model = build_model(config.backbone, num_classes=data.num_classes, feature_dim=data.feature_dim,
                        hidden=config.hidden, backbone_weights=config.backbone_weights)
    if data.feature_dim is not None:
        model[0].set_stats(torch.from_numpy(np.asarray(data.train_inputs)))
    model.to(ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and ctx.device.type == "cuda")
    return model, optimizer, scaler


def _run(ctx, config, data, run, progress, cancel) -> RunResult:
    model, optimizer, scaler = _build(ctx, config, data)
    use_amp = scaler.is_enabled()
    state = _State(0, data.s0_mask.copy(), data.s0_labels.copy())
    state, metrics = _maybe_resume(config, run, model, optimizer, scaler, state)
    resumed_from = state.epoch
    run.write_config({**dataclasses.asdict(config), "test_labels": data.test_labels_kind,
                      "run": {**data.describe(), "world_size": ctx.world_size,
                              "torch": torch.__version__}})
    ddp_model = ctx.wrap(model)
    batches = functools.partial(Batches, device=ctx.device, image_size=config.image_size,
                                num_workers=config.num_workers)
    train_batches, eval_test = batches(data.train_inputs, train=True), batches(data.test_inputs, train=False)
    eval_train = None  # only MixFix predicts on the training rows; features batch the same either way
    if config.mode == "mixfix":
        eval_train = train_batches if data.feature_dim is not None else batches(data.train_inputs, train=False)
    steps = max(1, len(data.given_labels) // config.batch_size)
    log.info("training %s (%s) on %d rows, S0 %d, test %d (%s labels), %d epochs x %d steps",
             config.backbone, config.mode, len(data.given_labels), int(data.s0_mask.sum()),
             len(data.test_labels), data.test_labels_kind, config.epochs, steps)
    run.write_status("running", epoch=state.epoch, epochs=config.epochs)
    report = _step_reporter(progress if ctx.is_main else None, state.epoch * steps, config.epochs * steps)
    try:
        while state.epoch < config.epochs:
            started = time.time()
            loss = _train_epoch(ctx, config, ddp_model, optimizer, scaler, state, train_batches,
                                steps, run, report, cancel, use_amp, data.num_classes)
            if loss is None:
                _finish(run, config, data, state, metrics, "cancelled", resumed_from)
                raise Cancelled(f"training cancelled after epoch {state.epoch} of {config.epochs}; "
                                f"run the same command again to resume {run.path} from there")
            row = _end_epoch(ctx, config, model, data, state, eval_train, eval_test, loss, started)
            metrics.append(row)
            _save_epoch(run, config, model, optimizer, scaler, state, metrics, row)
            if report is not None:
                report(state.epoch * steps)
                notify(progress, "epoch", state.epoch, config.epochs)
    except Cancelled:
        raise
    except BaseException as exc:
        _record_failure(run, exc, epoch=state.epoch, epochs=config.epochs)
        raise
    return _finish(run, config, data, state, metrics, "finished", resumed_from)


def _step_reporter(progress: Progress | None, first: int, total: int):
    """``report(done_steps)`` calling ``progress("train", done, total, steps_per_s)``; None when
    there is no one to tell (no callback, or not rank 0)."""
    if progress is None:
        return None
    meter = RateMeter()

    def report(done: int) -> None:
        progress("train", done, total, meter.rate(done - first))

    report(first)
    return report


def _record_failure(run, exc: BaseException, *, epoch: int, epochs: int) -> None:
    """Say "failed" ("cancelled" for a cancel) in status.json if the disk lets us; the original
    error is what matters."""
    state = "cancelled" if isinstance(exc, Cancelled) else "failed"
    try:
        run.write_status(state, epoch=epoch, epochs=epochs, message=str(exc) or type(exc).__name__)
    except (CLIPCleanerError, OSError) as status_error:
        log.warning("could not record the failure in %s: %s", run.path, status_error)


def _finish(run, config, data, state, metrics, state_name, resumed_from) -> RunResult:
    accs = [m["test_acc"] for m in metrics if m["test_acc"] is not None]
    best = max(accs) if accs else None
    run.write_status(state_name, epoch=state.epoch, epochs=config.epochs, best_test_acc=best)
    log.info("run %s after %d epoch(s); best test accuracy %s", state_name, state.epoch,
             "n/a" if best is None else f"{best:.4f}")
    return RunResult(run.path, state_name, state.epoch, best, accs[-1] if accs else None, metrics,
                     config, data.test_labels_kind, resumed_from)


def _train_epoch(ctx, config, model, optimizer, scaler, state, batches_of, steps, run, report,
                 cancel, use_amp, num_classes) -> float | None:
    """One epoch of balanced, mixed-up SGD; returns the mean loss, or None when cancelled."""
    epoch = state.epoch
    lr = step_lr(config.lr, epoch, config.milestones)
    for group in optimizer.param_groups:
        group["lr"] = lr
    seed = config.seed * 1_000_003 + epoch
    batches = balanced_batches(state.labels, state.in_set, num_batches=steps,
                               batch_size=config.batch_size, seed=seed, rank=ctx.rank,
                               world_size=ctx.world_size)
    torch.manual_seed(seed * 97 + ctx.rank)  # augmentation and dropout draws
    mix_rng = np.random.default_rng([config.seed, epoch, ctx.rank])
    labels = torch.from_numpy(state.labels).to(ctx.device)
    model.train()
    total, beat = torch.zeros(2, dtype=torch.float64), time.time()
    for step, (inputs, idx) in enumerate(batches_of(batches)):
        if ctx.any(bool(cancel and cancel())):
            return None
        targets = F.one_hot(labels[torch.as_tensor(idx, device=ctx.device)], num_classes).float()
        loss = _step(model, optimizer, scaler, inputs, targets, config.beta, mix_rng, use_amp)
        total += torch.tensor([loss * len(idx), len(idx)], dtype=torch.float64)
        if time.time() - beat > HEARTBEAT_S:
            beat = time.time()
            try:  # a heartbeat that cannot be written must not stop the epoch
                run.write_status("running", epoch=epoch, epochs=config.epochs, step=step + 1, steps=steps)
            except OSError as exc:
                log.warning("could not update %s: %s", run.path / "status.json", exc)
            if report is not None:
                report(epoch * steps + step + 1)
    ctx.sum_(total)
    return float(total[0] / max(total[1], 1.0))


def _step(model, optimizer, scaler, inputs, targets, beta, mix_rng, use_amp) -> float:
    inputs, targets = mixup(inputs, targets, beta=beta, generator=mix_rng)
    with torch.autocast(device_type=inputs.device.type, dtype=torch.float16, enabled=use_amp):
        logits = model(inputs)
    loss = soft_cross_entropy(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


@torch.no_grad()
def predict_proba(ctx, model, batches_of, n: int, num_classes: int) -> np.ndarray:
    """(n, K) softmax probabilities for every row, each rank predicting its shard (no augmentation)."""
    model.eval()
    probs = torch.zeros(n, num_classes, dtype=torch.float32, device=ctx.device)
    rows = sequential_batches(n, EVAL_BATCH, rank=ctx.rank, world_size=ctx.world_size)
    for inputs, idx in batches_of(rows):
        with torch.autocast(device_type=inputs.device.type, dtype=torch.float16,
                            enabled=inputs.device.type == "cuda"):
            logits = model(inputs)
        probs[torch.as_tensor(idx, device=ctx.device)] = torch.softmax(logits.float(), dim=1)
    return ctx.sum_(probs).cpu().numpy()


def _end_epoch(ctx, config, model, data, state, eval_train, eval_test, loss, started) -> dict:
    """Evaluate, apply the MixFix step (mode "mixfix"), and return the epoch's metrics row."""
    test_probs = predict_proba(ctx, model, eval_test, len(data.test_labels), data.num_classes)
    test_acc = float((test_probs.argmax(1) == data.test_labels).mean()) if len(data.test_labels) else None
    relabel_count = 0
    if config.mode == "mixfix":
        probs = predict_proba(ctx, model, eval_train, len(data.given_labels), data.num_classes)
        grown = relabel_and_grow(probs, data.given_labels, data.s0_mask, data.s0_labels,
                                 theta_r=config.theta_r, theta_r2=config.theta_r2)
        state.in_set, state.labels, relabel_count = grown.in_set, grown.labels, grown.relabel_count
    state.epoch += 1
    precision = None
    if data.true_labels is not None and state.in_set.any():
        precision = float((state.labels == data.true_labels)[state.in_set].mean())
    row = {"epoch": state.epoch, "loss": loss, "test_acc": test_acc,
           "train_set_size": int(state.in_set.sum()), "relabel_count": relabel_count,
           "label_precision": precision, "lr": step_lr(config.lr, state.epoch - 1, config.milestones),
           "time": round(time.time() - started, 3), "test_labels": data.test_labels_kind}
    log.info("epoch %d/%d loss %.4f test_acc %s set %d relabelled %d", state.epoch, config.epochs,
             loss, "n/a" if test_acc is None else f"{test_acc:.4f}", row["train_set_size"],
             relabel_count)
    return row


def _save_epoch(run, config, model, optimizer, scaler, state, metrics, row) -> None:
    """Write the resume state first, then the files derived from it; rank 0 only.

    last_state.pt holds everything a resume needs (weights included), so a kill between any two
    writes below leaves a resumable run; :meth:`RunDir.sync_outputs` repairs the rest on resume.
    """
    config_json = config.to_json()
    improved = row["test_acc"] is not None and row["test_acc"] > state.best_acc
    if improved:
        state.best_acc, state.best_epoch = row["test_acc"], state.epoch
    weights = cpu_state_dict(model)
    run.save_state({
        "epoch": state.epoch, "best_acc": state.best_acc, "best_epoch": state.best_epoch,
        "model": weights, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "in_set": torch.from_numpy(state.in_set.copy()), "labels": torch.from_numpy(state.labels.copy()),
        "config_key": atomic.hash_json(resume_key(config)), "metrics": [dict(m) for m in metrics],
    })
    if improved:
        run.save_weights(BEST, weights, epoch=state.epoch, config_json=config_json)
    run.save_weights(LAST, weights, epoch=state.epoch, config_json=config_json)
    run.write_metrics(metrics)
    run.write_status("running", epoch=state.epoch, epochs=config.epochs)


def _maybe_resume(config, run, model, optimizer, scaler, state):
    """Restore the last finished epoch when the folder holds one of the same config."""
    saved = run.load_state()
    if saved is None:
        if config.resume:
            log.warning("nothing to resume in %s: starting a fresh run", run.path)
        return state, []
    if saved.get("config_key") != atomic.hash_json(resume_key(config)):
        old = run.read_config()
        differs = sorted(k for k, v in resume_key(config).items() if old.get(k) != v)
        raise CLIPCleanerError(
            f"the run folder {run.path} holds a run with a different config (differs in {differs}); "
            "choose another --out folder, or delete that one to start over."
        )
    if "model" in saved:
        weights = saved["model"]
        repaired = run.sync_outputs(saved, config_json=config.to_json())
        if repaired:
            log.info("rewrote %s from the resume state of epoch %d", ", ".join(repaired), saved["epoch"])
        metrics = [dict(m) for m in saved.get("metrics", [])]
    else:  # a state written before the weights were kept in it
        weights, weights_epoch = run.load_weights(LAST)
        if weights_epoch != int(saved["epoch"]):
            raise CLIPCleanerError(f"{run.path}: last.safetensors is from epoch {weights_epoch} but "
                                   f"last_state.pt from epoch {saved['epoch']}; delete the folder to restart.")
        metrics = [m for m in run.read_metrics() if m["epoch"] <= int(saved["epoch"])]
    model.load_state_dict(weights)
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    state = _State(int(saved["epoch"]), saved["in_set"].numpy().astype(bool),
                   saved["labels"].numpy().astype(np.int64), float(saved["best_acc"]),
                   saved.get("best_epoch"))
    log.info("resuming %s from epoch %d", run.path, state.epoch)
    return state, metrics
