"""Neighbour evidence in the app (beyond the paper): the Tune page's switches for the neighbour
scores, and the Inspect page's views (near-duplicates, outliers, "more like this", text search).

The views return table rows in display order; the Inspect page shows them in its usual grid, with
the usual review actions. The nearest-neighbour index is the one the fit built and cached for the
embedding (``clipcleaner_core.neighbours``), loaded once per process.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from clipcleaner_core import neighbours
from clipcleaner_core.embed import embed_texts
from clipcleaner_core.knn_index import EXACT_MAX_ROWS
from clipcleaner_core.scoring import AUTO_NEIGHBOURS

DUPLICATES = "near-duplicates"
CONFLICTS = "conflicting duplicates"
OUTLIERS = "outliers"
SIMILAR = "more like this"
TEXT = "text search"
SEARCH_RESULTS = 96
"""How many of the most similar samples a similarity search shows (four pages of 24)."""
SIMILAR_KEY = "inspect_similar_to"
TEXT_KEY = "inspect_text_query"
COMBINE_LABELS = {"all": "all scores (the paper)", "majority": "at least half"}


# ---- Tune ---------------------------------------------------------------------------------------
def tune_controls(prepared, selection, set_selection, bind) -> None:
    """Switches and thresholds of the neighbour scores, and how the scores combine."""
    fit = prepared.fit
    with st.expander("Neighbour evidence (beyond the paper)", expanded=bool(
            selection.use_knn_agreement or selection.use_lemon or selection.combine != "all")):
        if not fit.has_neighbours:
            st.caption(f"This fit has no neighbour evidence: above {EXACT_MAX_ROWS:,} samples it is "
                       "built only on request (an approximate index; minutes at 10^6 samples).")
            if st.button("Compute the neighbour evidence (k = 10)", key="tune_compute_neighbours",
                         icon=":material/hub:"):
                from ui import state

                state.update(scoring=dataclasses.replace(state.active().scoring, neighbours=AUTO_NEIGHBOURS))
                st.rerun()
            return
        knn_col, lemon_col, theta_col, combine_col = st.columns([2, 2, 3, 3])
        bind("tune_use_knn_agreement", bool(selection.use_knn_agreement))
        knn_col.toggle("kNN agreement", key="tune_use_knn_agreement",
                       help="Share of a sample's 10 nearest images (cosine) that carry its label.",
                       on_change=lambda: set_selection(
                           use_knn_agreement=st.session_state["tune_use_knn_agreement"]))
        has_lemon = fit.lemon_score is not None
        bind("tune_use_lemon", bool(selection.use_lemon) and has_lemon)
        lemon_col.toggle("LEMoN distance", key="tune_use_lemon", disabled=not has_lemon,
                         help="Image to label-text distance plus the text distances of its image "
                              "neighbours' labels; passes on its clean probability (θ_gmm)."
                         if has_lemon else "Unavailable: it needs an encoder with a text tower.",
                         on_change=lambda: set_selection(use_lemon=st.session_state["tune_use_lemon"]))
        bind("tune_theta_knn", float(selection.theta_knn))
        theta_col.slider("θ_knn — min kNN agreement", 0.0, 1.0, step=0.05, key="tune_theta_knn",
                         on_change=lambda: set_selection(theta_knn=st.session_state["tune_theta_knn"]))
        bind("tune_combine", selection.combine)
        combine_col.radio("Keep a sample that passes", tuple(COMBINE_LABELS), key="tune_combine",
                          format_func=COMBINE_LABELS.get, horizontal=True,
                          on_change=lambda: set_selection(combine=st.session_state["tune_combine"]))


# ---- Inspect ------------------------------------------------------------------------------------
def views(prepared) -> tuple[str, ...]:
    """The neighbour views this fit offers."""
    if not prepared.fit.has_neighbours:
        return ()
    offered = [CONFLICTS, DUPLICATES, OUTLIERS]
    if st.session_state.get(SIMILAR_KEY) is not None:
        offered.append(SIMILAR)
    if prepared.zeroshot_available and prepared.dataset.kind != "embeddings":  # an encoder to ask
        offered.append(TEXT)
    return tuple(offered)


def view_rows(prepared, result, show: str) -> np.ndarray | None:
    """Table rows of the view ``show`` in display order, or None when ``show`` is not one of them."""
    table = result.table
    if show in (DUPLICATES, CONFLICTS):
        column = "is_conflicting_duplicate" if show == CONFLICTS else None
        group = table["duplicate_group"].to_numpy()
        keep = table[column].to_numpy(dtype=bool) if column else group >= 0
        rows = np.flatnonzero(keep)
        return rows[np.lexsort((rows, group[rows]))]  # a group's members side by side
    if show == OUTLIERS:
        rows = np.flatnonzero(table["is_outlier"].to_numpy(dtype=bool))
        return rows[np.argsort(-table["outlier_score"].to_numpy()[rows], kind="stable")]
    if show == SIMILAR:
        target = st.session_state.get(SIMILAR_KEY)
        positions = np.flatnonzero(table["index"].to_numpy() == target)
        if not positions.size:
            return np.zeros(0, dtype=np.int64)
        return _ranked(prepared, np.asarray(prepared.features[positions[0]], dtype=np.float32))
    if show == TEXT:
        text = (st.session_state.get(TEXT_KEY) or "").strip()
        if not text:
            return np.zeros(0, dtype=np.int64)
        query = embed_texts(prepared.encoder_spec, [text])[0]
        return _ranked(prepared, query)
    return None


def _ranked(prepared, query: np.ndarray) -> np.ndarray:
    rows, _ = neighbours.rank_by_query(_index(prepared), query, k=SEARCH_RESULTS)
    return rows


def _index(prepared) -> neighbours.NeighbourIndex:
    key = neighbours.index_key(prepared.embedding.key, prepared.sample_index)
    return _load_index(key, prepared)


@st.cache_resource(max_entries=2, show_spinner="Loading the nearest-neighbour index…")
def _load_index(key: str, _prepared) -> neighbours.NeighbourIndex:
    """The index of one embedding (keyed by its short key, never by the features)."""
    return neighbours.neighbour_index(_prepared.features, key=key)


def view_controls(show: str) -> None:
    """What a view needs above the grid: the text box, or which sample "more like this" follows."""
    if show == TEXT:
        st.text_input("Describe the images to find", key=TEXT_KEY,
                      placeholder="a blurry photo, a drawing of a dog, …",
                      help="Ranks the dataset by the similarity of each image to this text "
                           "(the encoder's text tower).")
    elif show == SIMILAR:
        st.caption(f"The {SEARCH_RESULTS} samples most similar to #{st.session_state.get(SIMILAR_KEY)} "
                   "(itself first), nearest first.")
    elif show in (DUPLICATES, CONFLICTS):
        st.caption("Groups of near-identical images (cosine similarity ≥ the duplicate threshold), "
                   "members side by side; conflicting groups carry more than one given label.")
    elif show == OUTLIERS:
        st.caption("Samples far from every other image (and, with a text tower, from every class "
                   "description), farthest first.")


def more_like_this_button(index: int) -> None:
    """The card's "more like this": open the view of the samples nearest to ``index``."""
    st.button("More like this", key=f"inspect_similar_{index}", icon=":material/travel_explore:",
              width="stretch", on_click=_show_similar, args=(index,))


def _show_similar(index: int) -> None:
    st.session_state[SIMILAR_KEY] = int(index)
    st.session_state["inspect_show"] = SIMILAR
    st.session_state["inspect_page"] = 1
