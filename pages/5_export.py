"""Export: download or write the cleaned labels, with review decisions applied."""
import dataclasses

import streamlit as st

from clipcleaner_core import export
from clipcleaner_core.errors import CLIPCleanerError
from clipcleaner_core.paths import cache_dir
from ui import state, widgets

FORMATS = {
    "csv": ("Score table · CSV", "One row per sample with every score, the selection and your review "
                                 "decisions (cleanlab-compatible column names).", "csv", "text/csv"),
    "parquet": ("Score table · Parquet", "The same table, typed and compact.", "parquet",
                "application/octet-stream"),
    "json": ("Score table · JSON", "The same table as a list of records.", "json", "application/json"),
    "manifest": ("Clean-only manifest", "`path,label` for the samples kept, with their final labels "
                                        "(relabels applied); loadable as a manifest.", "csv", "text/csv"),
    "imagefolder": ("ImageFolder tree", "One folder per class holding the kept images, as symbolic links "
                                        "or copies. The original files are never touched.", None, None),
    "recipe": ("Recipe", "Every setting and hash needed to reproduce this selection from the command "
                         "line.", "json", "application/json"),
}


def summary(result) -> None:
    table = result.table
    reviewed = table["review_decision"].fillna("").astype(str).str.len() > 0
    cols = st.columns(4)
    cols[0].metric("Samples", f"{len(table):,}")
    cols[1].metric("Kept (clean)", f"{int(table['is_clean'].sum()):,}")
    cols[2].metric("Flagged", f"{int((~table['is_clean'].astype(bool)).sum()):,}")
    cols[3].metric("Reviewed by hand", f"{int(reviewed.sum()):,}")
    st.caption("Review decisions from the Inspect page are applied: *drop* removes a sample, *keep* "
               "keeps it, *relabel* keeps it under its new label (`final_label`).")


def recipe_meta(prepared, result) -> dict:
    return {**prepared.describe(), "selection": dataclasses.asdict(result.config),
            "metrics": result.metrics}


def choose_format(dataset) -> str | None:
    """The chosen format, or None when it cannot apply to this dataset (the reason is shown)."""
    fmt = st.radio("Format", list(FORMATS), format_func=lambda f: FORMATS[f][0], horizontal=True,
                   key="export_format")
    st.caption(FORMATS[fmt][1])
    if fmt == "manifest" and dataset.images is not None:
        st.info(f"**{dataset.name}** keeps its images in memory, so a manifest of file paths cannot "
                "point at them. Export the **ImageFolder tree** instead: it writes the kept images as "
                "PNG files, one folder per class.", icon=":material/info:")
        return None
    return fmt


def choose_rows(fmt: str) -> bool:
    if fmt not in export.TABLE_FORMATS:
        return False
    return st.toggle("Kept samples only", key="export_clean_only",
                     help="Leave out the samples flagged as label issues (and those you dropped).")


def download(result, dataset, fmt: str, meta: dict, clean_only: bool) -> None:
    label, _, extension, mime = FORMATS[fmt]
    if extension is None:
        st.caption("An image tree cannot be downloaded as one file; write it to a folder below.")
        return
    if fmt == "manifest":
        st.caption("Paths in the downloaded manifest are relative to the dataset's folder; save it there.")
    # built when the button is clicked, not on every rerun of the page (0.4 s for a 50k-row CSV);
    # formats that cannot apply to this dataset were already refused by choose_format
    st.download_button(f"Download the {label}",
                       lambda: export.export_bytes(result.table, fmt, dataset=dataset, meta=meta,
                                                   clean_only=clean_only),
                       f"{dataset.name}-{fmt}.{extension}", mime=mime, on_click="ignore",
                       type="primary", icon=":material/download:", key="export_download")


def write_to_folder(result, dataset, fmt: str, meta: dict, clean_only: bool) -> None:
    extension = FORMATS[fmt][2]
    default = cache_dir() / "exports" / (f"{dataset.name}-{fmt}.{extension}" if extension
                                         else f"{dataset.name}-clean")
    with st.form("export_write"):
        target = st.text_input("Write to (file, or folder for the image tree)", str(default),
                               key="export_target")
        cols = st.columns(2)
        link = cols[0].radio("Images as", export.LINK_MODES, horizontal=True, key="export_link",
                             disabled=fmt != "imagefolder",
                             help="Only for the ImageFolder tree. In-memory datasets (the demo, CIFAR) "
                                  "are written as PNG files either way.")
        overwrite = cols[1].checkbox("Replace an existing image tree", key="export_overwrite",
                                     disabled=fmt != "imagefolder",
                                     help="The new tree is built aside and swapped in at once.")
        st.caption(widgets.data_roots_caption())
        submitted = st.form_submit_button("Write", icon=":material/save:")
    if not submitted:
        return
    bar = st.progress(0.0, text="Writing…")

    def show_progress(_stage, done, total, _rate=None):
        bar.progress(done / total if total else 1.0, text=f"{done:,}/{total:,} images")

    try:
        out = widgets.check_data_path(target, must_exist=False, what="export path")
        written = export.export(result.table, fmt, out, dataset=dataset, meta=meta, link=link,
                                clean_only=clean_only, overwrite=overwrite, progress=show_progress)
    except CLIPCleanerError as exc:
        state.show_error(exc)
        return
    finally:
        bar.empty()
    st.success(f"Wrote the {FORMATS[fmt][0]} to `{written}` (settings beside it in "
               f"`{written.name}.json`).", icon=":material/check:")


st.title("Export")
try:
    prepared = state.prepared()
    current = state.result()
except CLIPCleanerError as exc:
    state.show_error(exc)
    st.stop()

summary(current)
export_format = choose_format(prepared.dataset)
if export_format is not None:
    kept_only = choose_rows(export_format)
    metadata = recipe_meta(prepared, current)
    st.subheader("Download")
    download(current, prepared.dataset, export_format, metadata, kept_only)
    st.subheader("Write to a folder")
    write_to_folder(current, prepared.dataset, export_format, metadata, kept_only)
with st.expander("Preview of the score table"):
    st.dataframe(current.table.head(200), hide_index=True)
