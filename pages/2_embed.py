"""Embed: choose the encoder and prompts, compute the embeddings and scores, reuse cached ones."""
import dataclasses

import pandas as pd
import streamlit as st
import torch

from clipcleaner_core.embed import embed_dataset
from clipcleaner_core.embed_launch import can_launch, embed_on_local_gpus, local_gpu_count
from clipcleaner_core.encoders import EncoderSpec, list_open_clip_models
from clipcleaner_core.pipeline import prepare
from clipcleaner_core.prompts import PromptSet, prompt_set_for
from ui import background, state, widgets

TASK = "embed_task"
RANKS = "embed_ranks"
PIXELS = "pixels"
LOCAL = "local checkpoint file…"


@st.cache_data(show_spinner=False)
def _pretrained_tags() -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for model, tag in list_open_clip_models():
        tags.setdefault(model, []).append(tag)
    return tags


def open_clip_tags() -> dict[str, list[str]]:
    """Every open_clip architecture -> its pretrained tags (none for configs added locally)."""
    import open_clip

    tags = _pretrained_tags()
    return {**tags, **{m: [] for m in open_clip.list_models() if m not in tags}}


def choose_encoder() -> tuple[EncoderSpec | None, int]:
    """Model, weights, device and batch size; returns (spec or None when unusable, batch size)."""
    current = state.active().encoder
    tags = open_clip_tags()
    models = [PIXELS, *tags]
    cols = st.columns([2, 2, 1, 1])
    model = cols[0].selectbox("Model", models, index=models.index(current.model)
                              if current.model in models else 0, key="embed_model",
                              help="`pixels` needs no weights (no zero-shot); the others are open_clip models.")
    pretrained = None
    if model != PIXELS:
        choices = [*tags[model], LOCAL]
        chosen = cols[1].selectbox("Pretrained weights", choices, key=f"embed_tag_{model}",
                                   format_func=lambda t: t if t == LOCAL else
                                   f"{t} · {widgets.weights_status(model, t).split(':')[0]}")
        pretrained = chosen
        if chosen == LOCAL:
            text = st.text_input("Checkpoint file (.safetensors, or torch weights)", key="embed_ckpt",
                                 placeholder="e.g. ~/models/ViT-B-32-openai.safetensors")
            st.caption(widgets.data_roots_caption())
            try:
                pretrained = str(widgets.check_data_path(text, what="checkpoint file"))
            except state.USER_ERRORS as exc:
                if text:
                    state.show_error(exc)
                return None, 64
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    device = cols[2].selectbox("Device", devices, index=devices.index(current.device)
                               if current.device in devices else 0, key="embed_device")
    batch_size = cols[3].number_input("Batch size", 1, 4096, 64, step=16, key="embed_batch")
    spec = EncoderSpec(model=model, pretrained=pretrained, device=device)
    return (spec if weights_available(spec) else None), int(batch_size)


def weights_available(spec: EncoderSpec) -> bool:
    if spec.model == PIXELS:
        st.caption("Pixel features: 16x16 RGB, centred and normalised. No weights, no zero-shot scores.")
        return True
    status = widgets.weights_status(spec.model, spec.pretrained)
    if not status.startswith("missing"):
        st.success(f"Weights for {spec.model} ({spec.pretrained}): {status}.", icon=":material/check:")
        return True
    st.warning(f"Weights for {spec.model} ({spec.pretrained}) are missing. Here, pick “{LOCAL}” under "
               "Pretrained weights and give the file's path, or see below.", icon=":material/warning:")
    st.markdown(widgets.weights_help(spec.model, spec.pretrained) or status)
    return False


def prompt_editor(dataset, uses_text: bool) -> PromptSet | None:
    """Templates and per-class descriptions as editable data; returns the edited set (None if invalid)."""
    base = st.session_state.get("prompt_base") or state.active().prompts or prompt_set_for(dataset)
    if not uses_text:
        st.caption("Prompts only matter for CLIP models (zero-shot scores); the pixel encoder ignores them.")
    key = base.fingerprint()
    templates = st.text_area("Templates, one per line (`{c}` = class name); used for classes without "
                             "descriptions", "\n".join(base.templates), key=f"templates_{key}", height=120)
    rows = [(c, d) for c in dataset.class_names for d in base.descriptions_for(c)]
    edited = st.data_editor(
        pd.DataFrame(rows, columns=["class", "description"]), num_rows="dynamic", hide_index=True,
        key=f"descriptions_{key}",
        column_config={"class": st.column_config.SelectboxColumn(options=list(dataset.class_names),
                                                                 required=True),
                       "description": st.column_config.TextColumn(
                           help=f"Becomes “{base.description_template}” with {{d}} = this text")},
    )
    descriptions: dict[str, list[str]] = {}
    for row in edited.dropna().itertuples(index=False):
        if str(row.description).strip():
            descriptions.setdefault(str(row[0]), []).append(str(row.description).strip())
    with state.user_errors():
        return dataclasses.replace(
            base, templates=tuple(t.strip() for t in templates.splitlines() if t.strip()),
            descriptions={c: tuple(d) for c, d in descriptions.items()}, name=base.name)
    return None


def prompt_files(prompts: PromptSet | None) -> None:
    cols = st.columns(2)
    imported = cols[0].file_uploader("Import prompts (JSON)", type=["json"], key="prompt_import",
                                max_upload_size=5)
    if imported is not None and st.session_state.get("prompt_import_id") != imported.file_id:
        try:
            st.session_state["prompt_base"] = PromptSet.from_json(imported.getvalue().decode("utf-8"),
                                                                  source=imported.name)
            st.session_state["prompt_import_id"] = imported.file_id
            st.rerun()
        except (*state.USER_ERRORS, UnicodeDecodeError) as exc:
            state.show_error(exc)
    if prompts is not None:
        cols[1].download_button("Export prompts (JSON)", prompts.to_json(), "prompts.json",
                                mime="application/json", icon=":material/download:")


def start(dataset, spec: EncoderSpec, batch_size: int, prompts: PromptSet | None) -> None:
    scoring = state.active().scoring
    gpus = local_gpu_count()
    on_all_gpus = gpus > 1 and can_launch(dataset, spec)  # one torchrun process per GPU
    ranks = st.session_state[RANKS] = {}

    def work(progress, cancel):
        if on_all_gpus:
            embed_on_local_gpus(dataset, spec, nproc=gpus, batch_size=batch_size, progress=progress,
                                on_ranks=lambda rows: ranks.update(rows=rows), cancel=cancel)
        else:
            embed_dataset(dataset, spec, batch_size=batch_size, progress=progress, cancel=cancel)
        prepare(dataset, spec, prompts=prompts, scoring=scoring, progress=progress, cancel=cancel)
        return spec, prompts

    st.session_state[TASK] = background.BackgroundTask(work, label="embed").start()


def finish(task: background.BackgroundTask) -> None:
    """Called on the first full rerun after the thread ended."""
    del st.session_state[TASK]
    if task.cancelled:
        st.warning("Embedding cancelled. Finished chunks are kept, so running it again resumes.",
                   icon=":material/cancel:")
    elif task.error is not None:
        state.show_error(task.error)
    else:
        spec, prompts = task.result
        if prompts is not None and prompts.fingerprint() == prompt_set_for(state.dataset()).fingerprint():
            prompts = None  # the built-in set: keep following the dataset
        state.update(encoder=spec, prompts=prompts)
        st.success(f"Embedded and scored with {spec.model}"
                   f"{f' ({spec.pretrained})' if spec.pretrained else ''}; it is now active.",
                   icon=":material/check:")


def run_panel(dataset, spec: EncoderSpec | None, batch_size: int, prompts: PromptSet | None) -> None:
    task = st.session_state.get(TASK)
    if task is not None and not task.running:
        finish(task)
        task = None
    if task is None:
        if spec is not None and spec == state.active().encoder:
            st.caption("This encoder is already active; running it again re-uses the cache and "
                       "applies edited prompts.")
        if st.button("Embed and score", type="primary", icon=":material/play_arrow:", disabled=spec is None,
                     key="embed_start"):
            start(dataset, spec, batch_size, prompts)
            st.rerun()
    else:
        widgets.task_progress(task, key="embed", on_cancel_text="Stopping after the current batch…")
        rank_progress()


@st.fragment(run_every=2)
def rank_progress() -> None:
    """One line per GPU while the embedding runs on several (see embed_on_local_gpus)."""
    rows = st.session_state.get(RANKS, {}).get("rows") or []
    for row in rows if len(rows) > 1 else []:
        left = "" if row.seconds_left is None else f", {row.seconds_left:.0f} s left"
        rate = f", {row.rate:,.0f} images/s" if row.rate else ""
        st.caption(f"GPU {row.rank}: {row.done:,} / {row.total:,}{rate}{left}")


def cached_embeddings(dataset) -> None:
    st.subheader("Cached embeddings")
    with state.user_errors(stop=True):
        table = pd.DataFrame(state.catalogue().list_embeddings())
        datasets = pd.DataFrame(state.catalogue().list_datasets())
    if len(table) == 0:
        st.caption("None yet.")
        return
    names = dict(zip(datasets.get("fingerprint", []), datasets.get("name", [])))
    fingerprints = {dataset.content_fingerprint(), dataset.fingerprint()}
    table = table.assign(
        dataset=[names.get(fp) or (dataset.name if fp in fingerprints else fp) for fp in table["dataset_fp"]],
        active_dataset=[fp in fingerprints for fp in table["dataset_fp"]],
        created=pd.to_datetime(table["created"], unit="s").dt.strftime("%Y-%m-%d %H:%M"),
    )
    shown = table[["key", "dataset", "active_dataset", "model", "pretrained", "dim", "n", "created"]]
    picked = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="single-row",
                          key="embedding_table")
    rows = picked.selection.rows if picked is not None else []
    if not rows:
        st.caption("Select a row to make its encoder active.")
    elif st.button("Make active", key="embedding_activate"):
        activate(table.iloc[rows[0]], datasets)


def activate(row: pd.Series, datasets: pd.DataFrame) -> None:
    """Make a cached embedding's encoder (and, if needed, its dataset) active."""
    spec = EncoderSpec(model=row["model"], pretrained=row["pretrained"] or None)
    if row["active_dataset"]:
        state.update(encoder=spec)
        st.rerun()
    known = datasets[datasets["fingerprint"] == row["dataset_fp"]] if len(datasets) else datasets
    if len(known) == 0:
        st.error("This embedding's dataset is not in the catalogue; load it on the Dataset page first.")
        return
    state.update(dataset_spec=str(known.iloc[0]["spec"]), dataset_format=None, noise=None, encoder=spec)
    st.rerun()


state.ensure_routed()
st.title("Embed")
st.caption("Image features (and, for CLIP, prompt features) are computed once per dataset and model, "
           "cached on disk, and reused by every later page.")
with state.user_errors(stop=True):
    active_dataset = state.dataset()

st.subheader("Encoder")
encoder_spec, batch = choose_encoder()
with st.expander("Prompts (templates and class descriptions)",
                 expanded=encoder_spec is not None and encoder_spec.model != PIXELS):
    edited_prompts = prompt_editor(active_dataset, uses_text=encoder_spec is None
                                   or encoder_spec.model != PIXELS)
    prompt_files(edited_prompts)
run_panel(active_dataset, encoder_spec, batch, edited_prompts)
cached_embeddings(active_dataset)
