"""The Train page's "Reproduce the paper" section: run ``python -m clipcleaner_core reproduce`` as a job.

It needs no active dataset: the user names one of the paper's datasets and its folder, sees the
preset the run will use and the published number, launches the run in the background and reads
its ``results.md`` when it ends.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.paths import within_roots
from clipcleaner_core.presets import PAPER_RESULTS, PRESET_TABLE
from clipcleaner_core.reproduce import DATASETS, REPORT, ReproduceConfig

JOB_KEY = "reproduce_job_id"
NOISE_DEFAULTS = {"cifar10": "sym:0.5", "cifar100": "sym:0.5", "red-mini-imagenet": "red:0.4"}
NOISE_HELP = ("CIFAR: sym:RATE, asym:RATE, idn:RATE (our generator) or file:PATH/dependent0.4.csv (the "
              "paper's IDN file); Red Mini-ImageNet: red:RATE or blue:RATE (0.0-0.8)")


def reproduce_panel(runner) -> None:
    """Draw the section; ``runner`` returns the page's :class:`~clipcleaner_core.jobs.JobRunner`."""
    with st.expander("Reproduce the paper", icon=":material/science:"):
        st.caption("Runs the paper's whole recipe on one of its datasets: CLIP ViT-B-32 selection with the "
                   "preset thresholds, MixFix training with the preset backbone and schedule, evaluation "
                   "on the test set(s), and a report beside the published accuracy. The full runs need a "
                   "GPU and hours (see the README); a rerun resumes where a stopped one ended.")
        config = _settings()
        if config is not None and st.button("Run the paper's recipe", key="reproduce_launch",
                                            icon=":material/play_arrow:"):
            _launch(runner(), config)
        _show_latest(runner())


def _settings() -> ReproduceConfig | None:
    left, middle, right = st.columns([1, 2, 1])
    dataset = left.selectbox("Dataset", DATASETS, key="reproduce_dataset")
    root = middle.text_input("Dataset folder (its public layout)", key="reproduce_root",
                             placeholder="/data/ANIMAL-10N")
    gpus = right.number_input("GPUs", 1, 16, 1, key="reproduce_gpus")
    noise = None
    if dataset in NOISE_DEFAULTS:
        noise = st.text_input("Noise", NOISE_DEFAULTS[dataset], key=f"reproduce_noise_{dataset}", help=NOISE_HELP)
    try:
        config = ReproduceConfig(dataset=dataset, root=root.strip(), noise=noise or None, gpus=int(gpus))
        st.dataframe(_preset_table(config.preset), hide_index=True)
    except CLIPCleanerError as exc:
        st.error(str(exc))
        return None
    if not root.strip():
        return None
    if not Path(root).expanduser().exists():
        st.error(f"{root} does not exist; give the folder holding the dataset as it was extracted")
        return None
    if not within_roots(Path(root).expanduser()):
        st.error(f"{root} is outside the folders this app may read; add it on the Dataset page first")
        return None
    return config


def _preset_table(preset: str) -> pd.DataFrame:
    values = PRESET_TABLE[preset]
    published = "; ".join(f"{'' if rate is None else f'{rate:.0%} noise: '}"
                          + ", ".join(f"{name} {acc}" for name, acc in tests.items())
                          for rate, tests in PAPER_RESULTS.get(preset, {}).items())
    return pd.DataFrame([{
        "preset": preset, "θ_gmm": values.theta_gmm, "θ_cons": values.theta_cons, "β": values.beta,
        "θ_r": values.theta_r, "θ_r2": values.theta_r2, "epochs": values.epochs, "batch": values.batch,
        "backbone": f"{values.backbone} @ {values.image_size} px", "paper's top-1 (%)": published or "n/a",
    }])


def _launch(runner, config: ReproduceConfig) -> None:
    run_dir = runner.new_run_dir("reproduce")
    argv = [sys.executable, "-m", "clipcleaner_core", "reproduce", "--dataset", config.dataset,
            "--root", config.root, "--gpus", str(config.gpus), "--out", str(run_dir)]
    if config.noise:
        argv += ["--noise", config.noise]
    try:
        job_id = runner.submit(argv, kind="reproduce", run_dir=run_dir,
                               name=f"Reproduce {config.dataset}" + (f" ({config.noise})" if config.noise else ""))
    except CLIPCleanerError as exc:
        st.error(str(exc))
        return
    st.session_state[JOB_KEY] = job_id
    st.toast(f"Reproduction {job_id} started")


def _show_latest(runner) -> None:
    jobs = [j for j in runner.list() if j.kind == "reproduce"]
    if not jobs:
        return
    job = next((j for j in jobs if j.id == st.session_state.get(JOB_KEY)), jobs[0])
    st.markdown(f"**{job.name or 'Reproduction'}** (job {job.id}): {job.status}")
    report = job.run_dir / REPORT
    if report.exists():
        st.markdown(report.read_text(encoding="utf-8"))
    elif job.status == "failed" and job.error:
        st.error(job.error)
    st.code(runner.tail(job.id, lines=12) or "(nothing yet)", language=None)
