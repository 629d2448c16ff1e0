"""CLIPCleaner: find wrong labels in an image dataset with CLIP.

Run with ``streamlit run app.py``. This file is only the router: it lists the pages, takes the
settings from the address bar on a session's first run, draws the shared sidebar and the encoder
banner, and runs the page the user picked (Tune by default, which opens on the built-in demo).
The banner's look-up of CLIP weights starts only after the page has started its work, so a first
launch shows the demo's counts without waiting for open_clip to load.
A user error that escapes a page is shown as an error box; the sidebar and the other pages stay
usable.
"""
import streamlit as st

from ui import state, widgets

st.set_page_config(page_title="CLIPCleaner", page_icon=":material/label_off:", layout="wide")

pages = {
    "Prepare": [
        st.Page("pages/1_dataset.py", title="Dataset", icon=":material/folder_open:"),
        st.Page("pages/2_embed.py", title="Embed", icon=":material/memory:"),
    ],
    "Clean": [
        st.Page("pages/3_tune.py", title="Tune", icon=":material/tune:", default=True),
        st.Page("pages/4_inspect.py", title="Inspect", icon=":material/image_search:"),
    ],
    "Use": [
        st.Page("pages/5_export.py", title="Export", icon=":material/download:"),
        st.Page("pages/6_train.py", title="Train", icon=":material/model_training:"),
    ],
}

page = st.navigation(pages)
state.restore_from_url()
st.session_state["current_page"] = page.title
st.set_page_config(page_title=f"{page.title} · {state.active().dataset_label()} · CLIPCleaner")
state.write_url()
state.sidebar(show_selection=page.title != "Tune")
widgets.url_notes()
widgets.encoder_banner()
try:
    with state.routed(), state.user_errors():
        page.run()
finally:  # also when the page stops to show a fit's progress: the look-up waits for that fit
    widgets.check_weights_later()
