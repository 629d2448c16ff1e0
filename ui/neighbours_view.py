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
from clipcleaner_core.selection import COMBINE_RULES, SelectionConfig

DUPLICATES = "near-duplicates"
CONFLICTS = "conflicting duplicates"
OUTLIERS = "outliers"
SIMILAR = "more like this"
TEXT = "text search"
ACROSS = "duplicates across splits"
#: the views Inspect offers when the fit has neighbour evidence (and, for some, more: see views())
VIEWS = (CONFLICTS, DUPLICATES, OUTLIERS, ACROSS, SIMILAR, TEXT)
MAX_QUERY_CHARS = 300
SEARCH_RESULTS = 96
"""How many of the most similar samples a similarity search shows (four pages of 24)."""
SIMILAR_KEY = "inspect_similar_to"
TEXT_KEY = "inspect_text_query"
COMBINE_LABELS = {"all": "all scores (the paper)", "majority": "at least half"}
MAX_K = 100
"""The largest k the Tune page and the address accept (the graph is N x k)."""


# ---- the address bar (ui.state reads these) ----------------------------------------------------
#: the neighbour scores' short names in the address -> their SelectionConfig switches
URL_SCORES = {"knn": "use_knn_agreement", "lemon": "use_lemon"}
URL_PARAMS = {
    "nb": "the neighbour scores that take part: knn, lemon (comma-separated)",
    "knn": "θ_knn, the least kNN agreement", "combine": "keep a sample passing all / majority",
    "k": "k of the neighbour evidence (0 = none)",
}


def url_params(settings) -> dict[str, str]:
    """The query parameters of the neighbour settings in ``settings`` (defaults left out)."""
    selection, default = settings.selection, SelectionConfig()
    params = {}
    enabled = [name for name, attr in URL_SCORES.items() if getattr(selection, attr)]
    if enabled:
        params["nb"] = ",".join(enabled)
    if selection.theta_knn != default.theta_knn:
        params["knn"] = f"{selection.theta_knn:g}"
    if selection.combine != default.combine:
        params["combine"] = selection.combine
    if settings.scoring.neighbours is not None:
        params["k"] = str(settings.scoring.neighbours)
    return params


def selection_from_params(params: dict, ignore) -> dict:
    """SelectionConfig changes from the address (``nb``, ``knn``, ``combine``); a value that cannot
    be used is passed to ``ignore(name, why)`` and left out."""
    changes = {}
    if "nb" in params:
        names = [v.strip() for v in params["nb"].split(",") if v.strip() and v.strip() != "none"]
        unknown = [v for v in names if v not in URL_SCORES]
        if unknown:
            ignore("nb", f"unknown neighbour score(s) {', '.join(unknown)}; known: {', '.join(URL_SCORES)}")
        else:
            changes.update({attr: name in names for name, attr in URL_SCORES.items()})
    if "knn" in params:
        value = _number(params["knn"])
        if value is not None and 0.0 <= value <= 1.0:
            changes["theta_knn"] = value
        else:
            ignore("knn", "θ_knn must be a number from 0 to 1")
    if "combine" in params:
        if params["combine"] in COMBINE_RULES:
            changes["combine"] = params["combine"]
        else:
            ignore("combine", f"not one of {', '.join(COMBINE_RULES)}")
    return changes


def scoring_from_params(params: dict, ignore) -> dict:
    """ScoringConfig changes from the address (``k``)."""
    if "k" not in params:
        return {}
    value = params["k"].strip()
    if value.isdecimal() and int(value) <= MAX_K:
        return {"neighbours": int(value)}
    ignore("k", f"k must be a whole number from 0 to {MAX_K}")
    return {}


def summary(selection, fit_has_lemon: bool = True) -> tuple[list[str], list[str]]:
    """The sidebar's words for the neighbour settings: (enabled score names, threshold parts)."""
    names = [name for name, on in (("knn", selection.use_knn_agreement),
                                   ("lemon", selection.use_lemon and fit_has_lemon)) if on]
    parts = [f"θ_knn {selection.theta_knn:.2f}"] if selection.use_knn_agreement else []
    if names and selection.combine != "all":
        parts.append(f"keep: {COMBINE_LABELS[selection.combine]}")
    return names, parts


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN is no number


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
        knn_col, lemon_col, theta_col, combine_col, k_col = st.columns([2, 2, 3, 3, 2])
        k = fit.knn_indices.shape[1]
        bind("tune_use_knn_agreement", bool(selection.use_knn_agreement))
        knn_col.toggle("kNN agreement", key="tune_use_knn_agreement",
                       help=f"Share of a sample's {k} nearest images (cosine) that carry its label, "
                            "each counted by its similarity and by the trust in its own label "
                            "(its paper scores, propagated over the neighbours).",
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
        from ui import state

        wanted = state.active().scoring.neighbours or k
        bind("tune_neighbours_k", int(wanted))
        k_col.number_input("k neighbours", min_value=1, max_value=MAX_K, step=1,
                           key="tune_neighbours_k", on_change=_set_k,
                           help="How many nearest images vote; a new k recomputes the neighbour "
                                "evidence (the index is cached per embedding).")
        if wanted != k:  # a new k refits: the whole page follows, not only this panel
            st.rerun()


def _set_k() -> None:
    from ui import state

    k = int(st.session_state["tune_neighbours_k"])
    scoring = state.active().scoring
    if scoring.neighbours != k:
        state.update(scoring=dataclasses.replace(scoring, neighbours=k))


# ---- Inspect ------------------------------------------------------------------------------------
def views(prepared) -> tuple[str, ...]:
    """The neighbour views this fit offers."""
    if not prepared.fit.has_neighbours:
        return ()
    offered = [CONFLICTS, DUPLICATES, OUTLIERS]
    if prepared.split_matches is not None or prepared.dataset.kind not in ("demo",):
        offered.append(ACROSS)  # datasets with a train / test split
    if st.session_state.get(SIMILAR_KEY) is not None:
        offered.append(SIMILAR)
    if prepared.zeroshot_available and prepared.dataset.kind != "embeddings":  # an encoder to ask
        offered.append(TEXT)
    return tuple(offered)


def unavailable_reason(show: str) -> str:
    """Why the view ``show`` may be missing from :func:`views`, for a note."""
    if show == SIMILAR:
        return "It follows one sample: press “More like this” on a card."
    if show == TEXT:
        return "It needs an encoder with a text tower (a CLIP model), and the neighbour evidence."
    if show == ACROSS:
        return "It needs a dataset with a train / test split, and the neighbour evidence."
    return "It needs the neighbour evidence: set k above 0 on the Tune page."


def restore(view: dict) -> None:
    """Take the sample "more like this" follows and the text query from a remembered view (the
    address bar), unless this session already chose them."""
    if view.get("like") is not None and st.session_state.get(SIMILAR_KEY) is None:
        st.session_state[SIMILAR_KEY] = int(view["like"])
    if view.get("q") and TEXT_KEY not in st.session_state:
        st.session_state[TEXT_KEY] = view["q"]


def view_params(show: str) -> dict:
    """What the address needs beyond ``show`` to open the view ``show`` again."""
    if show == SIMILAR and st.session_state.get(SIMILAR_KEY) is not None:
        return {"like": int(st.session_state[SIMILAR_KEY])}
    if show == TEXT and (st.session_state.get(TEXT_KEY) or "").strip():
        return {"q": st.session_state[TEXT_KEY].strip()[:MAX_QUERY_CHARS]}
    return {}


def view_rows(prepared, result, show: str) -> np.ndarray | None:
    """Table rows of the view ``show`` in display order, or None when ``show`` is not one of them."""
    table = result.table
    if show in (DUPLICATES, CONFLICTS):
        column = "is_conflicting_duplicate" if show == CONFLICTS else None
        group = table["duplicate_group"].to_numpy()
        keep = table[column].to_numpy(dtype=bool) if column else group >= 0
        rows = np.flatnonzero(keep)
        return rows[np.lexsort((rows, group[rows]))]  # a group's members side by side
    if show == ACROSS:
        if prepared.split_matches is None:
            _check_other_split_button(prepared)
            return np.zeros(0, dtype=np.int64)
        rows = np.flatnonzero(table["duplicate_across_splits"].to_numpy(dtype=bool))
        match = table["cross_split_match"].to_numpy()
        return rows[np.lexsort((rows, match[rows]))]  # in the order of their twins there
    if show == OUTLIERS:
        rows = np.flatnonzero(table["is_outlier"].to_numpy(dtype=bool))
        return rows[np.argsort(-table["outlier_score"].to_numpy()[rows], kind="stable")]
    if show == SIMILAR:
        target = st.session_state.get(SIMILAR_KEY)
        positions = np.flatnonzero(table["index"].to_numpy() == target)
        if not positions.size:
            st.warning(f"There is no sample #{target} in this dataset (the address may be from "
                       "another one); press “More like this” on a card to pick one.")
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
        st.text_input("Describe the images to find", key=TEXT_KEY, max_chars=MAX_QUERY_CHARS,
                      placeholder="a blurry photo, a drawing of a dog, …",
                      help="Ranks the dataset by the similarity of each image to this text "
                           "(the encoder's text tower).")
    elif show == SIMILAR:
        st.caption(f"The {SEARCH_RESULTS} samples most similar to #{st.session_state.get(SIMILAR_KEY)} "
                   "(itself first), nearest first.")
    elif show in (DUPLICATES, CONFLICTS):
        st.caption("Groups of near-identical images (cosine similarity ≥ the duplicate threshold), "
                   "members side by side; conflicting groups carry more than one given label.")
    elif show == ACROSS:
        st.caption("Samples with a near-identical image (cosine similarity ≥ the duplicate "
                   "threshold) in the dataset's other split: the same image on both sides of a "
                   "train / test split. The export's duplicate_across_splits and cross_split_match "
                   "columns name them.")
    elif show == OUTLIERS:
        st.caption("Samples far from every other image (and, with a text tower, from every class "
                   "description), farthest first.")


def other_split_name(split: str) -> str:
    return "test" if split == "train" else "train"


def _check_other_split_button(prepared) -> None:
    """Embed the other split (cached) and match every sample to it, on request."""
    other = other_split_name(prepared.dataset.split)
    if not st.button(f"Check the {other} split for near-duplicates", key="inspect_check_splits",
                     icon=":material/call_split:",
                     help=f"Embeds the {other} split with the same encoder (cached) and finds each "
                          "sample's nearest image there."):
        return
    from clipcleaner_core.data import load_dataset
    from ui import state

    settings = state.active()
    with state.user_errors(stop=True), st.spinner(f"Embedding and matching the {other} split…"):
        other_split = load_dataset(settings.dataset_spec, format=settings.dataset_format, split=other)
        prepared.check_other_split(other_split)
    st.rerun()


def more_like_this_button(index: int) -> None:
    """The card's "more like this": open the view of the samples nearest to ``index``."""
    st.button("More like this", key=f"inspect_similar_{index}", icon=":material/travel_explore:",
              width="stretch", on_click=_show_similar, args=(index,))


def _show_similar(index: int) -> None:
    st.session_state[SIMILAR_KEY] = int(index)
    st.session_state["inspect_show"] = SIMILAR
    st.session_state["inspect_page"] = 1
