"""A minimal Streamlit page that serves the Tune map component alone, for the browser benchmark.

At a million points the whole app would first need a fit of a million samples; this page instead
loads cached synthetic arrays (written by ``bench_app_browser.py`` into ``CLIPCLEANER_MAP_BENCH``)
and does per rerun exactly what the Tune page's map does: threshold -> status codes -> payload ->
the keyed component, plus a Flagged count and the selection's size.

Run by the benchmark: ``streamlit run benchmarks/map_app.py`` with CLIPCLEANER_MAP_BENCH set.
"""
import os
import sys
from pathlib import Path

import numpy as np
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ui import map_component  # noqa: E402


@st.cache_resource
def arrays(folder: str) -> dict:
    return {name: np.load(Path(folder) / f"{name}.npy") for name in ("coords", "given", "true", "score")}


data = arrays(os.environ["CLIPCLEANER_MAP_BENCH"])
n = len(data["score"])
theta = st.slider("θ_cons — min consistency", 0.0, 1.0, 0.5, step=0.01, key="theta")
clean = data["score"] >= theta
st.metric("Flagged", f"{int((~clean).sum()):,}")
noisy = data["given"] != data["true"]
payload = map_component.map_payload(
    data["coords"], map_component.status_codes(clean, noisy), sample_ids=np.arange(n), given=data["given"],
    suggested=data["true"], class_names=[f"class {k}" for k in range(int(data["given"].max()) + 1)],
    scores={"label score": data["score"]}, true=data["true"],
    renderer=os.environ.get("CLIPCLEANER_MAP_RENDERER", "auto"))
chosen = map_component.umap_map(payload, key="bench_map")
st.markdown(f"**{len(chosen):,} samples selected on the map**")
