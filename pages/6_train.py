"""Train: launch a run on the reviewed selection, watch it learn, compare it with earlier runs."""
import sys
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from clipcleaner_core.atomic import write_text
from clipcleaner_core.export import export
from clipcleaner_core.jobs import JobRunner
from clipcleaner_core.train.config import BACKBONES, TRAIN_PRESETS, TrainConfig, default_preset, resolve_config
from clipcleaner_core.train.rundir import BEST, RunDir
from ui import background, state
from ui.reproduce_panel import reproduce_panel

MODES = {
    "mixfix": "CLIPCleaner set + MixFix",
    "clean": "CLIPCleaner set only",
    "all": "All given labels (baseline)",
}
BACKBONE_HELP = ("linear / mlp: a head on the cached embeddings (seconds on a CPU); preact_resnet18: "
                 "the paper's network for 32 px images; resnet18 / resnet50: torchvision, for large images")
JOB_KEY = "train_job_id"


def runner() -> JobRunner:
    """The job runner of the current cache folder's catalogue."""
    return _runner(state.cache_root())


@st.cache_resource(show_spinner=False)
def _runner(root: str) -> JobRunner:
    """Created once per app process and cache folder, when it also marks dead jobs as failed."""
    jobs = JobRunner(state.catalogue())
    jobs.reconcile()
    return jobs


def configure(dataset) -> TrainConfig:
    """The settings widgets; returns the chosen (unresolved) config, training mode included."""
    names = sorted(TRAIN_PRESETS)
    preset_default = default_preset(getattr(dataset, "kind", None)) or "cifar10"
    left, middle, right = st.columns(3)
    preset = left.selectbox("Preset from the paper", names, index=names.index(preset_default),
                            key="train_preset", help="Schedule and MixFix thresholds the paper used for this dataset")
    backbone = middle.selectbox("Backbone", BACKBONES, index=0, key="train_backbone", help=BACKBONE_HELP)
    mode = right.radio("Train on", list(MODES), format_func=MODES.get, index=0, key="train_mode")
    defaults = resolve_config(TrainConfig(preset=preset, backbone=backbone))
    key = f"{preset}-{backbone}"
    cols = st.columns(4)
    epochs = cols[0].number_input("Epochs", 1, 1000, int(defaults.epochs), key=f"epochs-{key}")
    mixfix_off = mode != "mixfix"
    theta_r = cols[1].slider("θ_r (join if agreeing)", 0.0, 1.0, float(defaults.theta_r), 0.01,
                             key=f"theta_r-{key}", disabled=mixfix_off,
                             help="Confidence a prediction that agrees with the label needs to join the set")
    theta_r2 = cols[2].slider("θ_r2 (relabel if disagreeing)", 0.0, 1.0, float(defaults.theta_r2), 0.01,
                              key=f"theta_r2-{key}", disabled=mixfix_off,
                              help="Confidence a disagreeing prediction needs to relabel the sample")
    beta = cols[3].slider("β (mixup)", 0.0, 8.0, float(defaults.beta), 0.1, key=f"beta-{key}",
                          help="Mixup Beta(β, β) parameter; 0 turns mixup off")
    return TrainConfig(preset=preset, backbone=backbone, mode=mode, epochs=int(epochs), theta_r=theta_r,
                       theta_r2=theta_r2, beta=beta)


def export_selection(result, run_dir, *, mode: str) -> str:
    """Write the reviewed selection the run trains on (the baseline ignores it); returns its path."""
    path = run_dir / "selection.csv"
    export(result.table, "csv", path, dataset=state.dataset(), meta={"purpose": f"training ({mode})"})
    return str(path)


def write_config(settings, config: TrainConfig, selection: str, run_dir) -> str:
    """The run's whole config (the active dataset, noise and model with the chosen settings) as
    ``RUN_DIR/config.json``, the one file the train command reads; returns its path."""
    noise = settings.noise
    if noise is not None:
        noise = f"file:{noise.path}" if noise.mode == "file" else f"{noise.mode}:{noise.rate:g}:{noise.seed}"
    full = config.replace(data=settings.dataset_spec, noise=noise, model=settings.encoder.model,
                          pretrained=settings.encoder.pretrained or None, selection=selection)
    path = run_dir / "config.json"
    write_text(path, full.to_json())
    return str(path)


def launch(settings, config: TrainConfig) -> None:
    with state.user_errors(stop=True):
        result = state.result()
        run_dir = runner().new_run_dir("train")
        selection = export_selection(result, run_dir, mode=config.mode)
        config_path = write_config(settings, config, selection, run_dir)
        argv = [sys.executable, "-m", "clipcleaner_core", "train", "--config", config_path, "--out", str(run_dir)]
        name = f"{MODES[config.mode].split(' (')[0]} · {config.backbone} · {config.epochs} ep"
        job_id = runner().submit(argv, kind="train", run_dir=run_dir, name=name)
    st.session_state[JOB_KEY] = job_id
    job = runner().status(job_id)
    st.toast(f"Run {job_id} {'started' if job.status != 'queued' else 'queued behind a running job'}")


def run_info(job) -> dict:
    """What a run folder says: config (the training mode included), metrics rows and status."""
    folder = RunDir(job.run_dir, writer=False)
    try:
        return {"config": folder.read_config(), "metrics": folder.read_metrics(),
                "status": folder.read_status()}
    except (OSError, ValueError):
        return {"config": {}, "metrics": [], "status": {}}


def acc_label(config: dict) -> str:
    if str(config.get("test_labels", "")).startswith("true"):
        return "test accuracy (true labels)"
    return "test accuracy (given labels: they carry the same label noise)"


def curves(metrics: list[dict], config: dict) -> go.Figure:
    frame = pd.DataFrame(metrics)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", acc_label(config)))
    fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["loss"], mode="lines+markers", name="loss"), 1, 1)
    fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["test_acc"], mode="lines+markers",
                             name="test accuracy"), 1, 2)
    if "label_precision" in frame and frame["label_precision"].notna().any():
        fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["label_precision"], mode="lines",
                                 name="label precision of the set", line={"dash": "dash"}), 1, 2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=320, margin={"t": 40, "b": 10, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def epoch_progress(info: dict, epochs: int) -> str:
    """``Training 3/20 epochs · 0.5 epochs/s · 34 s left`` from the metrics log's epoch times."""
    times = [m["time"] for m in info["metrics"] if m.get("time")]
    rate = len(times) / sum(times) if times and sum(times) > 0 else None
    done = info["metrics"][-1]["epoch"] if info["metrics"] else 0
    if not epochs:
        return f"epoch {done} / ?"
    return background.describe(background.Progress("train", done, int(epochs), rate))


def show_job(job) -> None:
    info = run_info(job)
    epochs = info["status"].get("epochs") or info["config"].get("epochs") or 0
    epoch = info["metrics"][-1]["epoch"] if info["metrics"] else 0
    label = f"Run {job.id} · {job.name or job.kind} · {job.status}"
    if job.status == "queued":
        st.info(f"{label}: waiting for the running job to finish (one job runs at a time).")
    else:
        st.progress(min(epoch / epochs, 1.0) if epochs else 0.0, text=f"{label} · {epoch_progress(info, epochs)}")
    if job.status == "failed" and job.error:
        st.error(job.error)
    if info["metrics"]:
        st.plotly_chart(curves(info["metrics"], info["config"]), key=f"curves-{job.id}")
    with st.expander("Log", expanded=job.status == "failed"):
        st.code(runner().tail(job.id, lines=40) or "(nothing yet)", language=None)
    if not job.finished and st.button("Cancel run", key=f"cancel-{job.id}", icon=":material/stop:"):
        runner().cancel(job.id)
        st.rerun()


@st.fragment(run_every=2)
def live_job() -> None:
    """The current run, refreshed every two seconds while the page is open."""
    job_id = st.session_state.get(JOB_KEY)
    if job_id is None:
        return
    job = runner().status(job_id)
    show_job(job)
    if job.finished and st.session_state.get("train_job_seen_finished") != job_id:
        st.session_state["train_job_seen_finished"] = job_id
        st.rerun(scope="app")  # refresh the table of past runs


def summarize(job) -> dict:
    info = run_info(job)
    metrics, config = info["metrics"], info["config"]
    mode = config.get("mode", "?")
    accs = [m.get("test_acc") for m in metrics if m.get("test_acc") is not None]
    last = metrics[-1] if metrics else {}
    return {
        "run": job.id, "dataset": dataset_label(config), "trained on": MODES.get(mode, mode),
        "backbone": config.get("backbone"), "status": job.status, "epochs": last.get("epoch"),
        "best test acc": max(accs) if accs else None, "last test acc": accs[-1] if accs else None,
        "final set size": last.get("train_set_size"), "label precision": last.get("label_precision"),
        "test labels": config.get("test_labels"),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(job.started)) if job.started else "",
    }


def dataset_label(config: dict) -> str:
    """The dataset a run trained on, as ``pets + sym:0.3 noise`` (its folder or file name)."""
    spec = str(config.get("data") or "?")
    name = spec.rstrip("/").rsplit("/", 1)[-1] or spec
    noise = config.get("noise")
    return f"{name} + {noise} noise" if noise else name


def past_runs() -> None:
    jobs = [j for j in runner().list() if j.kind == "train"]
    if not jobs:
        st.caption("No runs yet.")
        return
    table = pd.DataFrame([summarize(j) for j in jobs])
    pct = st.column_config.NumberColumn(format="percent")
    st.dataframe(table, hide_index=True, column_config={"best test acc": pct, "last test acc": pct,
                                                        "label precision": pct})
    if table["test labels"].astype(str).str.startswith("given").any():
        st.caption("Where the test labels are the given ones, test accuracy carries the same label noise "
                   "as the training labels: compare runs with it, but do not read it as true accuracy.")
    finished = [j for j in jobs if (j.run_dir / BEST).exists()]
    if finished:
        chosen = st.selectbox("Run", finished, format_func=lambda j: f"Run {j.id} · {j.name or ''}",
                              key="download_run")
        st.download_button("Download best checkpoint (safetensors)", data=lambda: (chosen.run_dir / BEST).read_bytes(),
                           file_name=f"clipcleaner-run{chosen.id}-best.safetensors", on_click="ignore",
                           icon=":material/download:")


def selection_summary() -> None:
    result = state.result()
    clean = np.asarray(result.table["is_clean"], dtype=bool)
    decisions = result.table.get("review_decision", pd.Series(dtype=object))
    reviewed = int(decisions.isin(["keep", "drop", "relabel"]).sum())
    st.caption(f"The run trains on the active selection: {int(clean.sum())} of {len(clean)} samples kept "
               f"by CLIPCleaner, {reviewed} reviewed by hand. Change it on the Tune and Inspect pages.")


state.ensure_routed()
st.title("Train")
st.write("Train a classifier on the cleaned labels with the paper's MixFix recipe, next to the "
         "baseline that trains on every given label.")
reproduce_panel(runner)  # needs no active dataset, so it comes before the checks
with state.user_errors(stop=True):
    settings = state.active()
    dataset = state.dataset()
    selection_summary()

config = configure(dataset)
if st.button("Launch training run", type="primary", icon=":material/play_arrow:"):
    launch(settings, config)
runner().pump()

st.subheader("Current run")
if st.session_state.get(JOB_KEY) is None:
    active = [j for j in runner().list() if j.kind == "train" and not j.finished]
    if active:
        st.session_state[JOB_KEY] = active[0].id
live_job()

st.subheader("Past runs")
past_runs()
