"""Export: download or write the cleaned labels, with review decisions applied.

Written exports go to the chosen export folder under a name that follows the format; an earlier
export is replaced only after a confirmation, and a file this app did not write never is.
"""
import dataclasses
from pathlib import Path

import streamlit as st

from clipcleaner_core import export
from clipcleaner_core.atomic import sidecar_path
from ui import background, export_files, state, widgets

EXPORT_TASK = "export_task"
EXPORT_PENDING = "export_pending"

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


def write_form(dataset, fmt: str) -> tuple[str, str, str, bool]:
    """The folder, file name and link mode widgets; returns them and whether Write was pressed.

    The file name is kept per format, so choosing another format suggests a name with its extension
    and never reuses the previous format's file.
    """
    extension = FORMATS[fmt][2]
    st.session_state.setdefault("export_folder", str(export_files.last_folder()))
    name_key = f"export_name_{fmt}"
    st.session_state.setdefault(name_key, export_files.suggested_name(dataset.name, fmt, extension))
    folder_col, name_col = st.columns([3, 2])
    folder_col.text_input("Export folder", key="export_folder",
                          help="Where exports are written; it must lie under the folders this app may use.")
    name_col.text_input("Folder name" if extension is None else "File name", key=name_key,
                        help="A name in the export folder; its extension follows the format.")
    link = st.radio("Images as", export.LINK_MODES, horizontal=True, key="export_link",
                    disabled=fmt != "imagefolder",
                    help="Only for the ImageFolder tree. In-memory datasets (the demo, CIFAR) are written "
                         "as PNG files either way.")
    st.caption(widgets.data_roots_caption())
    pressed = st.button("Write", icon=":material/save:", key="export_write", type="secondary")
    return st.session_state["export_folder"], st.session_state[name_key], link, pressed


def write_to_folder(result, dataset, fmt: str, meta: dict, clean_only: bool) -> None:
    """Check the target, ask before replacing an earlier export, then write (in the background for
    an image tree, with progress and Cancel)."""
    task = st.session_state.get(EXPORT_TASK)
    if task is not None:
        if task.running:
            widgets.task_progress(task, key="export")
            return
        finish_export(task)
    folder, name, link, pressed = write_form(dataset, fmt)
    pending = st.session_state.get(EXPORT_PENDING)
    if pressed:
        st.session_state.pop(EXPORT_PENDING, None)
        with state.user_errors(stop=True):
            target = export_files.check_target(folder, name, extension=FORMATS[fmt][2])
        if target.replaces:
            st.session_state[EXPORT_PENDING] = {"path": str(target.path), "fmt": fmt}
            st.rerun()
        start_export(result, dataset, fmt, meta, clean_only, target, link)
    elif pending is not None and pending["fmt"] == fmt:
        confirm_replace(result, dataset, fmt, meta, clean_only, folder, name, link)


def confirm_replace(result, dataset, fmt, meta, clean_only, folder, name, link) -> None:
    path = st.session_state[EXPORT_PENDING]["path"]
    st.warning(f"`{path}` already exists: an earlier export from this app. Replace it?",
               icon=":material/warning:")
    replace_col, rename_col, cancel_col = st.columns(3)
    if replace_col.button("Replace it", type="primary", key="export_confirm_replace"):
        st.session_state.pop(EXPORT_PENDING, None)
        with state.user_errors(stop=True):
            target = export_files.check_target(folder, name, extension=FORMATS[fmt][2])
        if str(target.path) != path:
            st.rerun()  # the fields changed since: ask again for the new target
        start_export(result, dataset, fmt, meta, clean_only, target, link)
    rename_col.button("Keep both (new name)", key="export_keep_both", on_click=keep_both, args=(fmt, path))
    cancel_col.button("Cancel", key="export_cancel_replace", on_click=st.session_state.pop,
                      args=(EXPORT_PENDING, None))


def keep_both(fmt: str, path: str) -> None:
    """Suggest the next free name instead of replacing (a callback: it runs before the widgets)."""
    st.session_state.pop(EXPORT_PENDING, None)
    st.session_state[f"export_name_{fmt}"] = export_files.next_free_name(Path(path).parent, Path(path).name)


def start_export(result, dataset, fmt, meta, clean_only, target, link) -> None:
    def work(progress, cancel):
        written = export.export(result.table, fmt, target.path, dataset=dataset, meta=meta, link=link,
                                clean_only=clean_only, overwrite=target.replaces, progress=progress,
                                cancel=cancel)
        export_files.record_written(written, sidecar_path(written), folder=target.path.parent)
        return written

    task = background.BackgroundTask(work, label="export").start()
    task.wait(1.0)  # table formats finish here; an image tree goes on in the background
    st.session_state[EXPORT_TASK] = task
    st.rerun()


def finish_export(task) -> None:
    del st.session_state[EXPORT_TASK]
    if task.cancelled:
        st.warning("Export cancelled; nothing was written.", icon=":material/cancel:")
    elif task.error is not None:
        state.show_error(task.error)
    else:
        written = task.result
        st.success(f"Wrote `{written}` (settings beside it in `{written.name}.json`).",
                   icon=":material/check:")


state.ensure_routed()
st.title("Export")
with state.user_errors(stop=True):
    prepared = state.require_prepared()
    current = state.result()

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
