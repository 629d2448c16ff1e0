"""``python -m clipcleaner_core``: every stage of the app as a command.

Bad input exits with status 2 and one line on stderr naming what is wrong and how to fix it;
outputs are written atomically, so a failed command never leaves a half-written file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from clipcleaner_core.data.paper import PAPER_FORMATS
from clipcleaner_core.errors import CLIPCleanerError, ConfigError, DataError
from clipcleaner_core.reproduce import add_parser as add_reproduce_parser
from clipcleaner_core.reproduce import run_command as cmd_reproduce

log = logging.getLogger("clipcleaner_core")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="SPEC",
                        help="'demo', or a path to an ImageFolder tree, a CSV/Parquet manifest or a CIFAR folder")
    parser.add_argument("--format", dest="data_format", default=None,
                        choices=["imagefolder", "manifest", "cifar10", "cifar100", "demo", *PAPER_FORMATS],
                        help="override the detected dataset kind")
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--noise", default=None, metavar="MODE:RATE",
                        help="inject synthetic noise, e.g. sym:0.4, asym:0.3, idn:0.2, file:PATH")
    parser.add_argument("--noise-seed", type=int, default=0)


def _add_encoder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="pixels",
                        help="open_clip model name (e.g. ViT-B-32) or 'pixels' (no weights needed)")
    parser.add_argument("--pretrained", default=None, metavar="TAG|PATH",
                        help="open_clip pretrained tag, a local .safetensors/.pt checkpoint, or hf-hub:ID")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--allow-download", action="store_true",
                        help="let open_clip download missing weights (needs network; ViT-B-32 is ~600 MB)")
    parser.add_argument("--random-weights", action="store_true",
                        help="run an open_clip model with random weights (benchmarks only: scores are meaningless)")


def _add_threshold_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe", default="in-sample", choices=["in-sample", "cross-val", "off"])
    parser.add_argument("--no-zeroshot", action="store_true", help="use only the linear-probe scores")
    parser.add_argument("--theta-gmm", type=float, default=0.5)
    parser.add_argument("--theta-cons", type=float, default=0.8)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", default=None, metavar="JSON", help="a prompt set JSON file")
    parser.add_argument("--scores", default=None, metavar="NAMES",
                        help="comma-separated scores that take part: 'paper' (every paper score the "
                        "inputs provide), zs_loss, zs_consistency, lr_loss, lr_consistency, "
                        "knn_agreement, lemon (default: the paper's)")
    parser.add_argument("--neighbours", type=int, default=None, metavar="K",
                        help="k of the neighbour evidence (0 = none; default 10 up to 20,000 samples "
                        "or when a neighbour score is named in --scores)")
    parser.add_argument("--theta-knn", type=float, default=0.5, help="least kNN agreement")
    parser.add_argument("--combine", default="all", choices=["all", "majority"],
                        help="keep a sample that passes every enabled score (the paper) or at least half")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipcleaner_core",
                                     description="Find and fix wrong labels in image datasets with CLIP.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="compute (or reuse) cached image embeddings",
                           description="Under torchrun (one process per GPU, any number of nodes) the "
                           "chunks are shared out between the ranks; rank 0 writes the result.")
    _add_data_args(embed)
    _add_encoder_args(embed)
    embed.add_argument("--features-dtype", default="float32", choices=["float32", "float16"],
                       help="storage type of features.npy (float16: half the disk and memory)")
    embed.add_argument("--chunk-size", type=int, default=1024,
                       help="images per resumable chunk (under torchrun, the unit shared out between ranks)")
    embed.add_argument("--progress-dir", default=None, metavar="DIR",
                       help="each rank keeps DIR/rank<R>.json up to date: done, total, images/s")

    sel = sub.add_parser("select", help="score and select from embeddings you already have")
    sel.add_argument("--image-features", required=True, metavar="X.npy", help="(N, D) image features")
    sel.add_argument("--labels", required=True, metavar="y.npy", help="(N,) integer labels")
    sel.add_argument("--text-features", default=None, metavar="T.npy", help="(M, D) prompt features")
    sel.add_argument("--text-labels", default=None, metavar="t.npy", help="(M,) class of each prompt")
    sel.add_argument("--true-labels", default=None, metavar="TRUE.npy", help="(N,) ground truth, for metrics")
    sel.add_argument("--num-classes", type=int, default=None)
    sel.add_argument("--other-split-features", default=None, metavar="X_TEST.npy",
                     help="(M, D) features of the other split (e.g. the test set, same encoder): "
                     "flags samples with a near-duplicate on both sides (duplicate_across_splits)")
    _add_threshold_args(sel)
    sel.add_argument("--device", default="auto",
                     help="where the fit runs: auto (a CUDA GPU when present), cpu, cuda or cuda:N")
    sel.add_argument("--out", required=True, metavar="scores.csv")

    run = sub.add_parser("run", help="end to end: load, embed, score, select, write the score table")
    _add_data_args(run)
    _add_encoder_args(run)
    _add_threshold_args(run)
    run.add_argument("--check-splits", action="store_true",
                     help="also embed the dataset's other split (test for --split train) and flag "
                     "samples with a near-duplicate on both sides (duplicate_across_splits)")
    run.add_argument("--out", required=True, metavar="scores.csv")

    export = sub.add_parser("export", help="convert a score table to another format")
    export.add_argument("--scores", required=True, metavar="scores.csv")
    export.add_argument("--format", dest="export_format", required=True,
                        choices=["csv", "parquet", "json", "manifest", "imagefolder", "recipe"])
    export.add_argument("--out", required=True)
    export.add_argument("--copy", action="store_true", help="imagefolder: copy files instead of symlinks")
    export.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    export.add_argument("--match-by-path", action="store_true",
                        help="imagefolder / manifest: if the dataset changed since the table was made, "
                        "match its rows to the dataset by file path (only when every path is found "
                        "exactly once) instead of stopping")

    try:
        from clipcleaner_core.train import cli as train_cli
    except ImportError:  # training extras unavailable: the other commands still work
        train_cli = None
    if train_cli is not None:
        train_cli.add_parser(sub)
    add_reproduce_parser(sub)
    return parser


def _load_npy(path: str | None, what: str) -> np.ndarray | None:
    if path is None:
        return None
    file = Path(path)
    if not file.exists():
        raise DataError(f"{what} file {path} does not exist; pass the path of a .npy file.")
    try:
        return np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{what} file {path} is not a plain .npy array ({exc}); save it with numpy.save.") from exc


def _settings(args) -> tuple:
    from clipcleaner_core.scoring import ScoringConfig
    from clipcleaner_core.selection import SelectionConfig

    from clipcleaner_core.api import selection_from_scores, with_neighbours_for

    # SelectionConfig checks these too, but its message names the field, not the flag
    for name in ("theta_gmm", "theta_cons", "theta_knn"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} {value} is outside [0, 1]; pick a value in that range.")
    if not 0.0 < args.temperature < float("inf"):
        raise ConfigError(f"--temperature {args.temperature} must be a finite number > 0 (default 0.07).")
    if args.neighbours is not None and args.neighbours < 0:
        raise ConfigError(f"--neighbours {args.neighbours} must be >= 0 (0 turns the neighbour evidence off).")
    scoring = ScoringConfig(temperature=args.temperature, zeroshot=not args.no_zeroshot,
                            probe=args.probe, seed=args.seed, neighbours=args.neighbours)
    scores = _score_list(args)
    if scores is None:
        selection = SelectionConfig(theta_gmm=args.theta_gmm, theta_cons=args.theta_cons,
                                    theta_knn=args.theta_knn, combine=args.combine)
    else:  # scores a fit cannot provide (zero-shot without text features) are skipped later
        selection = selection_from_scores(args.theta_gmm, args.theta_cons, scores, scoring,
                                      theta_knn=args.theta_knn, combine=args.combine)
    return with_neighbours_for(selection, scoring), selection


def _score_list(args) -> list[str] | None:
    """The names in ``--scores`` (None when not given)."""
    return None if args.scores is None else [v.strip() for v in args.scores.split(",") if v.strip()]


def _load_data(args):
    from clipcleaner_core.data import apply_noise, load_dataset
    from clipcleaner_core.data.noise import parse_noise_spec

    dataset = load_dataset(args.data, format=args.data_format, split=args.split)
    if args.noise:
        spec = dataclasses.replace(parse_noise_spec(args.noise), seed=args.noise_seed)
        dataset = apply_noise(dataset, spec)
    if len(dataset.bad_files):
        log.warning("%d file(s) skipped while loading; first: %s (%s)", len(dataset.bad_files),
                    dataset.bad_files.iloc[0]["path"], dataset.bad_files.iloc[0]["reason"])
    return dataset


def _encoder_spec(args):
    from clipcleaner_core.encoders import EncoderSpec

    if args.model != "pixels" and not args.pretrained and not args.random_weights \
            and not args.model.startswith(("hf-hub:", "local-dir:")):
        raise DataError(f"--model {args.model} needs weights: pass --pretrained TAG (e.g. openai) or "
                        "--pretrained /path/to/checkpoint.safetensors, or use --model pixels.")
    return EncoderSpec(model=args.model, pretrained=args.pretrained, device=args.device)


def stderr_progress(stage: str, done: int, total: int, rate: float | None = None) -> None:
    """The CLI's :data:`~clipcleaner_core.progress.Progress`: one line per stage on stderr
    (redrawn in place on a terminal, printed once at the stage's end otherwise)."""
    if sys.stderr.isatty() or done == total:
        speed = f" {rate:.1f}/s" if rate else ""
        print(f"\r{stage}: {done}/{total}{speed}", end="\n" if done == total else "", file=sys.stderr)


def cmd_embed(args) -> int:
    group = _torchrun_group(args)
    try:
        start = time.perf_counter()
        dataset, embedding = _embed(args, group, dtype=args.features_dtype, chunk_size=args.chunk_size,
                                    progress_dir=args.progress_dir)
        seconds = time.perf_counter() - start
    finally:
        if group is not None:
            group.close()
    if group is not None and not group.is_main:
        return 0
    reused = bool(embedding.meta.get("reused", False))
    print(json.dumps({
        "key": embedding.key, "folder": str(embedding.folder),
        "status": "reused" if reused else "written", "n": int(len(embedding.valid)),
        "dim": int(np.asarray(embedding.image_features).shape[1]),
        "dtype": str(embedding.image_features.dtype), "world_size": embedding.meta.get("world_size", 1),
        "skipped_at_load": int(len(dataset.bad_files)),
        "undecodable": int(len(embedding.bad_files)), "seconds": round(seconds, 2),
    }, indent=2))
    return 0


EMBED_TIMEOUT_HOURS = 24
"""How long a rank of a torchrun embedding waits for the others (rank 0 may wait for another job's lock)."""


def _torchrun_group(args):
    """The process group of a ``torchrun`` launch (WORLD_SIZE > 1), or None for a single process."""
    import os
    from datetime import timedelta

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from clipcleaner_core.train.distributed import Distributed

    device = "cuda" if args.device.startswith("cuda") else args.device  # each rank: cuda:LOCAL_RANK
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {args.device} under torchrun: use auto, cpu or cuda")
    return Distributed.setup(device, timeout=timedelta(hours=EMBED_TIMEOUT_HOURS))


def _embed(args, group, *, dtype: str = "float32", chunk_size: int = 1024, progress_dir=None):
    """(dataset, embedding) of the command's --data and encoder; sharded over ``group`` if any."""
    from clipcleaner_core.embed import embed_dataset
    from clipcleaner_core.embed_launch import rank_progress_writer

    spec = _encoder_spec(args)
    label = "{stage}"
    if group is not None:
        spec = dataclasses.replace(spec, device=str(group.device))
        label = f"{{stage}} rank {group.rank}/{group.world_size}"
        dataset = group.run_everywhere(lambda: _load_data(args), what="loading the dataset")
    else:
        dataset = _load_data(args)
    write_progress = rank_progress_writer(progress_dir, group.rank if group is not None else 0)

    def progress(stage: str, done: int, total: int, rate: float | None = None) -> None:
        stderr_progress(label.format(stage=stage), done, total, rate)
        write_progress(stage, done, total, rate)

    embedding = embed_dataset(dataset, spec, batch_size=args.batch_size, dtype=dtype, chunk_size=chunk_size,
                              allow_download=args.allow_download, distributed=group, progress=progress)
    return dataset, embedding


def cmd_select(args) -> int:
    from clipcleaner_core.api import find_label_issues
    from clipcleaner_core.export import export, table_format
    from clipcleaner_core.metrics import selection_metrics

    out_format = table_format(args.out, what="--out")
    features = _load_npy(args.image_features, "--image-features")
    labels = _load_npy(args.labels, "--labels")
    text_features = _load_npy(args.text_features, "--text-features")
    text_labels = _load_npy(args.text_labels, "--text-labels")
    true_labels = _load_npy(args.true_labels, "--true-labels")
    scoring, selection_config = _settings(args)
    if text_features is None and scoring.zeroshot:
        log.info("no --text-features given: zero-shot scores are off")
    table = find_label_issues(
        features, labels, text_features=text_features if scoring.zeroshot else None,
        text_labels=text_labels if scoring.zeroshot else None,
        class_names=None if args.num_classes is None else [str(k) for k in range(args.num_classes)],
        theta_gmm=selection_config.theta_gmm, theta_cons=selection_config.theta_cons,
        temperature=scoring.temperature, probe=scoring.probe, seed=scoring.seed,
        scores=_score_list(args), neighbours=args.neighbours, theta_knn=selection_config.theta_knn,
        combine=selection_config.combine, true_labels=true_labels,
        other_split_features=_load_npy(args.other_split_features, "--other-split-features"),
        device=args.device,
    )
    clean_mask = table["is_clean"].to_numpy(dtype=bool)
    metrics = selection_metrics(clean_mask, table["given_label"].to_numpy(), true_labels,
                                table["label_score"].to_numpy())
    meta = {"command": "select", "inputs": {k: getattr(args, k) for k in
            ("image_features", "labels", "text_features", "text_labels")},
            "scoring": dataclasses.asdict(scoring), "selection": dataclasses.asdict(selection_config),
            "metrics": metrics}
    export(table, out_format, args.out, meta=meta)
    _print_metrics(metrics, args.out)
    return 0


def cmd_run(args) -> int:
    from clipcleaner_core.export import export, table_format
    from clipcleaner_core.pipeline import prepare, select_samples
    from clipcleaner_core.prompts import load_prompt_set

    out_format = table_format(args.out, what="--out")
    scoring, selection_config = _settings(args)
    group = _torchrun_group(args)
    if group is not None:  # embedding sharded over the ranks, then the fit on rank 0 alone
        try:
            dataset, _ = _embed(args, group)
        finally:
            group.close()
        if not group.is_main:
            return 0
    else:
        dataset = _load_data(args)
    prompts = load_prompt_set(args.prompts) if args.prompts else None
    other_split = None
    if args.check_splits:
        from clipcleaner_core.data import load_dataset

        other_split = load_dataset(args.data, format=args.data_format,
                                   split="test" if args.split == "train" else "train")
    prepared = prepare(dataset, _encoder_spec(args), prompts=prompts, scoring=scoring,
                       progress=stderr_progress, allow_download=args.allow_download,
                       other_split=other_split)
    for note in prepared.notes:
        print(f"note: {note}", file=sys.stderr)
    result = select_samples(prepared, selection_config)
    meta = {"command": "run", **prepared.describe(),
            "selection": dataclasses.asdict(result.config), "metrics": result.metrics}
    export(result.table, out_format, args.out, meta=meta, class_names=dataset.class_names)
    _print_metrics(result.metrics, args.out)
    return 0


def cmd_export(args) -> int:
    from clipcleaner_core.atomic import read_sidecar
    from clipcleaner_core.data.match import align_table
    from clipcleaner_core.export import export, read_table

    table = read_table(args.scores)
    meta = read_sidecar(args.scores)
    dataset_meta = meta.get("dataset") or {}
    class_names = dataset_meta.get("class_names")
    dataset = None
    if args.export_format in DATASET_EXPORTS:
        dataset = _dataset_from_meta(dataset_meta, args.scores, args.export_format)
        table = align_table(table, dataset, recorded=dataset_meta, source=args.scores,
                            by_path=args.match_by_path, by_path_hint="pass --match-by-path",
                            rerun_hint=f"python -m clipcleaner_core run --data {dataset.spec} ... "
                                       "--out NEW_SCORES.csv")
        class_names = list(dataset.class_names)
        meta = {k: v for k, v in meta.items() if k not in ("dataset", "export")}  # describe it as now
    out = export(table, args.export_format, args.out, dataset=dataset, class_names=class_names,
                 meta=meta, link="copy" if args.copy else "symlink", overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


DATASET_EXPORTS = ("imagefolder", "manifest")
"""Export formats that need the dataset itself (its images, or its root for relative paths)."""


def _dataset_from_meta(dataset_meta: dict, scores: str, fmt: str):
    from clipcleaner_core.data import apply_noise, load_dataset
    from clipcleaner_core.data.noise import NoiseSpec

    spec = dataset_meta.get("spec")
    if not spec:
        raise DataError(f"{scores} has no dataset recorded in its sidecar {scores}.json (or the table "
                        f"was edited since); a {fmt} export needs the dataset's files: write the table "
                        "with 'run' (not 'select'), or export csv / parquet / json instead.")
    dataset = load_dataset(spec, format=dataset_meta.get("kind") if dataset_meta.get("kind") != "demo" else None,
                           split=dataset_meta.get("split", "train"))
    noise = dataset_meta.get("noise")
    if noise and dataset.kind != "demo":
        fields = {k: noise[k] for k in ("mode", "rate", "seed", "path") if noise.get(k) is not None}
        dataset = apply_noise(dataset, NoiseSpec(**fields))
    return dataset


def _print_metrics(metrics: dict, out: str) -> None:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()
             if not isinstance(v, (list, dict))}
    print(json.dumps({"out": out, **shown}, indent=2))


COMMANDS = {"embed": cmd_embed, "select": cmd_select, "run": cmd_run, "export": cmd_export,
            "reproduce": cmd_reproduce}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from clipcleaner_core.train import cli as train_cli

        handler = train_cli.run
    else:
        handler = COMMANDS[args.command]
    return run_handler(handler, args)


def run_handler(handler, args) -> int:
    """Run ``handler(args)``; a user error becomes one line on stderr and exit status 2."""
    try:
        check_outputs(args)
        return handler(args)
    except CLIPCleanerError as exc:
        return _fail(args, str(exc))
    except OSError as exc:  # a file the user named cannot be read or written
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return _fail(args, f"cannot access{where}: {exc.strerror or exc}; check the path, its "
                           "permissions and the free space")
    except ValueError as exc:  # an input no validator named; still one line, never a traceback
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        print("error: interrupted; completed embedding chunks are kept and reused next time.", file=sys.stderr)
        return 130


INPUT_FLAGS = ("data", "image_features", "labels", "text_features", "text_labels", "true_labels",
               "prompts", "scores", "selection", "config", "backbone_weights")
"""Namespace attributes that name files a command reads (the flags with dashes)."""


def check_outputs(args) -> None:
    """Refuse, before any work, a command whose ``--out`` (or its sidecar) is one of its inputs.

    Inputs are the files named by :data:`INPUT_FLAGS`, a ``file:`` noise file, the sidecar of a
    score table read with ``--scores``, and the class list beside a ``--data`` manifest; links
    (symbolic and hard) are followed. A training run's folder must also lie outside a ``--data``
    folder: nothing is written into a dataset unless the user names a file there for ``--out``.
    """
    from clipcleaner_core.atomic import sidecar_path
    from clipcleaner_core.data.manifest import CLASS_FILES
    from clipcleaner_core.guard import refuse_inside_dataset_folder, refuse_overwriting_inputs

    out = getattr(args, "out", None)
    if not out:
        return
    inputs = {f"--{name.replace('_', '-')}": getattr(args, name, None) for name in INPUT_FLAGS}
    noise = getattr(args, "noise", None) or ""
    if noise.strip().lower().startswith("file:"):
        inputs["the --noise file"] = noise.split(":", 1)[1].strip()
    if getattr(args, "scores", None):
        inputs["the sidecar of --scores"] = sidecar_path(args.scores)
    data = getattr(args, "data", None)
    if data and Path(data).expanduser().is_file():
        inputs["the class list beside --data"] = [Path(data).expanduser().parent / n for n in CLASS_FILES]
    refuse_overwriting_inputs({"--out": out}, inputs)
    if getattr(args, "command", "train") == "train" and data:  # the train CLI has no command
        refuse_inside_dataset_folder(out, data, what="the run folder --out")


def _fail(args, message: str) -> int:
    """Print ``message`` as one line on stderr (the traceback only with -v); exit status 2."""
    if getattr(args, "verbose", False):
        log.exception("failed")
    # one write of the whole line: ranks of a torchrun job share stderr, unbuffered, and print's
    # separate write of the newline let two ranks' lines run together
    sys.stderr.write("error: " + " ".join(message.split()) + "\n")
    sys.stderr.flush()
    return 2
