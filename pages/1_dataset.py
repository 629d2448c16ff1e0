"""Dataset: pick what to clean, see its classes and samples, and optionally add synthetic noise."""
import numpy as np
import streamlit as st

from clipcleaner_core.data.noise import NOISE_MODES, NoiseSpec
from clipcleaner_core.paths import add_data_root, data_root_entries, remove_data_root
from clipcleaner_core.uploads import save_upload
from ui import state, widgets

SOURCES = ["Built-in demo", "ImageFolder path", "Manifest file (CSV / Parquet)",
           "Other folder (detected)", "Upload a zip or manifest"]
GENERATED_NOISE = [mode for mode in NOISE_MODES if mode != "file"]


def switch_dataset(spec: str, fmt: str | None) -> None:
    """Make ``spec`` the active dataset; on failure keep the previous one and show why."""
    before = state.active()
    state.update(dataset_spec=spec, dataset_format=fmt, noise=None)
    try:
        loaded = state.dataset()
    except state.USER_ERRORS as exc:
        state.update(dataset_spec=before.dataset_spec, dataset_format=before.dataset_format,
                     noise=before.noise)
        state.show_error(exc)
        return
    st.session_state["dataset_flash"] = (f"Loaded {loaded.name}: {len(loaded):,} images in "
                                         f"{loaded.num_classes} classes.")
    st.rerun()


def path_source(label: str, fmt: str | None, placeholder: str) -> None:
    text = st.text_input(label, placeholder=placeholder, key=f"path_{fmt or 'cifar'}")
    st.caption(widgets.data_roots_caption())
    if st.button("Load", type="primary", key=f"load_{fmt or 'cifar'}"):
        with state.user_errors():
            switch_dataset(str(widgets.check_data_path(text, what="dataset path")), fmt)


def upload_source() -> None:
    upload = st.file_uploader(
        "Zip of an ImageFolder tree (or a manifest with its images), or a manifest file",
        type=["zip", "csv", "parquet"],
        help="Extracted under the cache's uploads folder. Archives whose entries escape the folder, "
             "contain links, or unpack to more than the size limit are refused.",
    )
    if upload is None or st.session_state.get("loaded_upload") == upload.file_id:
        return
    with state.user_errors():
        path = save_upload(upload.getvalue(), upload.name)
        st.session_state["loaded_upload"] = upload.file_id
        switch_dataset(str(path), "manifest" if path.is_file() else None)


def choose_source() -> None:
    kind = state.active().dataset_format or ("demo" if state.active().dataset_spec == "demo" else None)
    first = {"demo": 0, "imagefolder": 1, "manifest": 2}.get(kind, 1)
    choice = st.radio("Source", SOURCES, horizontal=True, key="dataset_source", index=first)
    if choice == "Built-in demo":
        st.caption("scikit-learn's 1,797 handwritten digits, loaded with 40% of labels replaced at random "
                   "(the true labels are kept, so the app can score its own selection).")
        if state.active().dataset_spec != "demo" and st.button("Use the demo", type="primary"):
            switch_dataset("demo", None)
    elif choice == "ImageFolder path":
        path_source("Folder with one sub-folder per class", "imagefolder", "e.g. ~/data/pets/train")
    elif choice.startswith("Manifest"):
        path_source("Manifest with columns path,label (+ true_label)", "manifest",
                    "e.g. ~/data/pets/labels.csv")
    elif choice == "Other folder (detected)":
        path_source("A CIFAR-10/100 'python version' folder, one of the paper's datasets (ANIMAL-10N, "
                    "Red Mini-ImageNet, mini-WebVision, Clothing1M) or precomputed embeddings "
                    "(features.npy + labels, or clip-retrieval's img_emb/ + metadata/)", None,
                    "e.g. ~/data/cifar-10-batches-py or ~/embeddings/imagenet")
    else:
        upload_source()


def noise_injector(dataset) -> None:
    current = state.active().noise
    with st.expander("Add synthetic label noise (for benchmarking)", expanded=current is not None):
        st.caption("Replaces labels on purpose and keeps the originals as ground truth, so the "
                   "Tune page can report precision and recall. Asymmetric noise needs CIFAR-10 classes.")
        with st.form("noise"):
            cols = st.columns(3)
            modes = ["none", *GENERATED_NOISE]
            mode = cols[0].selectbox("Mode", modes, key="noise_mode",
                                     format_func=lambda m: "none (labels as loaded)" if m == "none" else m,
                                     index=modes.index(current.mode) if current else 0,
                                     help="sym: uniform over classes · asym: CIFAR-10 class pairs · "
                                          "idn: instance-dependent (Xia et al. 2020)")
            rate = cols[1].slider("Ratio", 0.0, 0.9, 0.2 if current is None else float(current.rate),
                                  0.05, key="noise_rate")
            seed = cols[2].number_input("Seed", 0, 2**31 - 1, 0 if current is None else current.seed,
                                        key="noise_seed")
            applied = st.form_submit_button("Apply")
        if applied:
            apply_noise(None if mode == "none" else NoiseSpec(mode=mode, rate=rate, seed=int(seed)))
    if dataset.noise:
        st.info(f"Noise on the given labels: {dataset.noise['mode']} at rate {dataset.noise['rate']:.2f}, "
                f"seed {dataset.noise.get('seed')} — flip rate {dataset.noise['flip_rate']:.1%}.",
                icon=":material/shuffle:")


def apply_noise(spec) -> None:
    before = state.active().noise
    state.update(noise=spec)
    try:
        state.dataset()
    except state.USER_ERRORS as exc:
        state.update(noise=before)
        state.show_error(exc)
        return
    st.rerun()


def overview(dataset) -> None:
    flipped = None if dataset.true_labels is None else float((dataset.labels != dataset.true_labels).mean())
    cols = st.columns(4)
    cols[0].metric("Images", f"{len(dataset):,}")
    cols[1].metric("Classes", dataset.num_classes)
    cols[2].metric("Unreadable files", len(dataset.bad_files))
    cols[3].metric("Wrong labels (known)", "unknown" if flipped is None else f"{flipped:.1%}")
    true_counts = None
    if dataset.true_labels is not None:
        true_counts = np.bincount(dataset.true_labels, minlength=dataset.num_classes)
    st.plotly_chart(widgets.class_counts_figure(dataset.class_names, dataset.class_counts(),
                                                true_counts=true_counts))
    with st.expander("Class counts as a table"):
        st.dataframe(widgets.class_counts_table(dataset), hide_index=True)


def samples_per_class(dataset) -> None:
    st.subheader("Samples per class")
    names = list(dataset.class_names)
    shown = st.selectbox("Class", names, key="grid_class")
    k = names.index(shown)
    indices = (dataset.labels == k).nonzero()[0][:16]
    captions = []
    for i in indices:
        caption = f"#{i}"
        if dataset.true_labels is not None and dataset.true_labels[i] != k:
            caption += f" (truly {dataset.class_names[dataset.true_labels[i]]})"
        captions.append(caption)
    widgets.image_grid(dataset, indices, captions, columns=8, max_images=16)


def bad_files(dataset) -> None:
    st.subheader("Unreadable files")
    if len(dataset.bad_files) == 0:
        st.caption("Every file could be read.")
    else:
        st.caption("These files were skipped; fix or remove them and load the dataset again.")
        st.dataframe(dataset.bad_files, hide_index=True)


def data_roots() -> None:
    """The folders in force, and a way to add one (confirmed, remembered in the cache)."""
    entries = data_root_entries()
    with st.expander(f"Folders this app may use ({len(entries)})", expanded=bool(st.session_state.get("root_added"))):
        st.caption("Paths typed into the app (datasets, checkpoints, export folders) must lie under one "
                   "of these folders, after symbolic links are followed. Uploads and the default export "
                   "folder are always allowed.")
        for number, entry in enumerate(entries):
            path_col, source_col, remove_col = st.columns([5, 3, 1], vertical_alignment="center")
            path_col.markdown(f"`{entry.path}`")
            source_col.caption(entry.source)
            if entry.source.startswith("added"):
                remove_col.button("Remove", key=f"root_remove_{number}", type="tertiary",
                                  on_click=remove_data_root, args=(entry.path,))
        if flash := st.session_state.pop("root_added", None):
            st.success(flash, icon=":material/check:")
        with st.form("add_root", clear_on_submit=True, border=False):
            text = st.text_input("Add a folder", placeholder="e.g. /data/datasets", key="root_new")
            confirmed = st.checkbox("I allow this app to read every file under this folder and to write "
                                    "exports there", key="root_confirm")
            added = st.form_submit_button("Add folder", icon=":material/add:")
        if added:
            if not confirmed:
                st.error("Tick “I allow this app to read every file under this folder…” to add it.",
                         icon=":material/error:")
                return
            with state.user_errors():
                if not text.strip():
                    raise ValueError("Enter a folder under “Add a folder” first.")
                folder = add_data_root(text.strip())
                st.session_state["root_added"] = f"Added {folder}; it is remembered across restarts."
                st.rerun()


state.ensure_routed()
st.title("Dataset")
if flash := st.session_state.pop("dataset_flash", None):
    st.success(flash, icon=":material/check:")
choose_source()
data_roots()
with state.user_errors(stop=True):
    active_dataset = state.dataset()
st.header(active_dataset.name, divider="gray")
st.caption(f"{active_dataset.kind} · {active_dataset.split} split · `{active_dataset.spec or active_dataset.root}`")
noise_injector(active_dataset)
overview(active_dataset)
samples_per_class(active_dataset)
bad_files(active_dataset)
