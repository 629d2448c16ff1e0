"""Tune: move the thresholds and watch the clean / flagged split on counts, a map and per class.

The fit (temperature, probe mode) is computed once and cached; thresholds and score switches only
re-apply the selection, so the panel below the fit controls reruns on its own as a fragment.
"""
import dataclasses

import numpy as np
import streamlit as st

from clipcleaner_core.presets import PRESETS
from clipcleaner_core.projection import display_sample
from clipcleaner_core.schema import PAPER_SCORE_NAMES, SCORES_BY_NAME
from ui import map_cache, map_component, neighbours_view, plots, state, widgets

MAX_MAP_POINTS = 4_000_000  # the map component draws every point up to this many
MAX_CHART_POINTS = 100_000  # the plotly fallback draws a random sample above this
TEMPERATURES = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
PROBE_MODES = ("in-sample", "cross-val", "off")
SCORE_SWITCHES = {  # selection field -> (label, score family), from the one registry of scores
    SCORES_BY_NAME[name].flag: (SCORES_BY_NAME[name].label.capitalize(), SCORES_BY_NAME[name].family)
    for name in PAPER_SCORE_NAMES
}


def show_prepared():
    """The cached fit of the active settings; while it is computed in the background the page shows
    its progress with a Cancel button and stops here."""
    with state.user_errors(stop=True):
        return state.require_prepared()


def set_selection(**changes):
    state.update(selection=dataclasses.replace(state.active().selection, **changes))


def set_scoring(**changes):
    state.update(scoring=dataclasses.replace(state.active().scoring, **changes))


def set_probe(zeroshot_available):
    mode = st.session_state["tune_probe"] or "in-sample"
    if mode == "off" and not zeroshot_available:
        st.session_state["tune_probe_refused"] = True
        return
    set_scoring(probe=mode)


def bind(key, value):
    """Show the active setting in the widget ``key`` (settings are the single source of truth).

    Written only when it differs: a value written here is pushed to the browser's widget, and a
    run that started before the user's latest key presses would push its older value back over
    them (five quick presses on a slider could end at the first one).
    """
    if key not in st.session_state or st.session_state[key] != value:
        st.session_state[key] = value


def fit_controls(prepared):
    """Temperature and probe mode change the fit itself: a full rerun that recomputes (cached)."""
    scoring = state.active().scoring
    left, right = st.columns(2)
    bind("tune_temperature", scoring.temperature if scoring.temperature in TEMPERATURES else 0.07)
    left.select_slider(
        "Temperature τ (zero-shot)", options=TEMPERATURES, key="tune_temperature",
        disabled=not prepared.zeroshot_available,
        on_change=lambda: set_scoring(temperature=st.session_state["tune_temperature"]),
        help="Softmax temperature of the zero-shot probabilities. Changing it refits the scores "
             "(cached per value); the thresholds below only re-select.",
    )
    bind("tune_probe", scoring.probe)
    right.segmented_control(
        "Linear probe", options=PROBE_MODES, key="tune_probe", required=True,
        on_change=set_probe, args=(prepared.zeroshot_available,),
        help="in-sample: fit and predict all samples (the paper). cross-val: predict each sample "
             "from a model fitted on the other folds. off: zero-shot scores only.",
    )
    if st.session_state.pop("tune_probe_refused", False):
        right.warning("The probe cannot be turned off: without a text tower it is the only score.")


def apply_preset():
    name = st.session_state["tune_preset"]
    if name not in PRESETS:
        state.update(preset=state.CUSTOM)
        return
    state.update(selection=dataclasses.replace(state.active().selection, **PRESETS[name]), preset=name)


def selection_controls(prepared):
    """Presets, the two thresholds and one switch per score."""
    sel = state.active().selection
    preset_col, gmm_col, cons_col = st.columns([1, 2, 2])
    bind("tune_preset", state.active().preset)  # "custom" once a threshold is moved by hand
    preset_col.selectbox("Paper preset", [state.CUSTOM, *PRESETS], key="tune_preset", on_change=apply_preset,
                         help="θ values the CLIPCleaner paper uses per dataset.")
    bind("tune_theta_gmm", float(sel.theta_gmm))
    gmm_col.slider("θ_gmm — min clean probability (loss scores)", 0.0, 1.0, step=0.01, key="tune_theta_gmm",
                   on_change=lambda: set_selection(theta_gmm=st.session_state["tune_theta_gmm"]))
    bind("tune_theta_cons", float(sel.theta_cons))
    cons_col.slider("θ_cons — min consistency (consistency scores)", 0.0, 1.0, step=0.01,
                    key="tune_theta_cons",
                    on_change=lambda: set_selection(theta_cons=st.session_state["tune_theta_cons"]))
    available = {"zs": prepared.fit.has_zeroshot, "lr": prepared.fit.has_probe}
    why_off = {"zs": f"Unavailable: the {prepared.encoder_name} encoder has no text tower "
                     "(or zero-shot is off), so there are no zero-shot scores.",
               "lr": "Unavailable: the linear probe is off."}
    for column, (field, (label, family)) in zip(st.columns(4), SCORE_SWITCHES.items()):
        key = f"tune_{field}"
        bind(key, bool(getattr(sel, field)) and available[family])
        column.toggle(label, key=key, disabled=not available[family],
                      help=None if available[family] else why_off[family],
                      on_change=lambda f=field, k=key: set_selection(**{f: st.session_state[k]}))
    neighbours_view.tune_controls(prepared, sel, set_selection, bind)
    for note in prepared.notes:
        st.caption(note)


def show_counts(result, has_truth):
    m = result.metrics
    cells = st.columns(6 if has_truth else 3)
    cells[0].metric("Kept", f"{m['kept']:,}")
    cells[1].metric("Flagged", f"{m['flagged']:,}")
    cells[2].metric("Estimated noise rate", f"{m['estimated_noise_rate']:.1%}")
    if has_truth:
        cells[3].metric("Precision", f"{m['precision']:.3f}", help="Share of kept samples whose label is right.")
        cells[4].metric("Recall", f"{m['recall']:.3f}", help="Share of rightly labelled samples that are kept.")
        cells[5].metric("F1", f"{m['f1']:.3f}", help=f"True noise rate: {m['true_noise_rate']:.1%}")


def class_names_of(labels, names):
    return names[np.asarray(labels, dtype=np.int64)]


def map_columns(part):
    """The per-sample arrays the map shows of the rows ``part``: ids, labels, truth, hover scores."""
    scores = {"label score": part["label_score"].to_numpy()}
    for column, label in (("zs_consistency", "zs consistency"), ("lr_consistency", "probe consistency")):
        if part[column].notna().any():
            scores[label] = part[column].to_numpy()
    return {"ids": part["index"].to_numpy(), "given": part["given_label"].to_numpy(),
            "suggested": part["suggested_label"].to_numpy(), "clean": part["is_clean"].to_numpy(),
            "true": part["true_label"].to_numpy() if "true_label" in part else None,
            "is_noisy": part["is_noisy"].to_numpy() if "is_noisy" in part else None, "scores": scores}


def draw_map(table, coords, names):
    """Draw every sample of ``table`` at ``coords``; returns the sample ids selected on the map."""
    rows = display_sample(len(table), max_points=MAX_MAP_POINTS, seed=0)
    part = table.iloc[rows] if len(rows) < len(table) else table
    c = map_columns(part)
    chosen = map_component.umap_map(map_component.map_payload(
        coords[rows], map_component.status_codes(c["clean"], c["is_noisy"]), sample_ids=c["ids"],
        given=c["given"], suggested=c["suggested"], class_names=list(names), scores=c["scores"], true=c["true"],
        reviewed=int((part["review_decision"].fillna("") != "").sum()), total=len(table)), key="tune_map")
    return chosen if chosen is not None else draw_chart(table, coords, names)


def draw_chart(table, coords, names):
    """The fallback when the component's files cannot be written (e.g. a read-only cache)."""
    rows = display_sample(len(table), max_points=MAX_CHART_POINTS, seed=0)
    c = map_columns(table.iloc[rows] if len(rows) < len(table) else table)
    sampled = (f" It draws a random {len(rows):,} of {len(table):,} samples; counts are exact."
               if len(rows) < len(table) else "")
    st.caption("The fast map is unavailable (its files could not be written to the cache folder); "
               f"showing the standard chart, which redraws every point on each change.{sampled}")
    figure = plots.umap_figure(
        coords[rows], plots.map_status(c["clean"], c["is_noisy"]), sample_ids=c["ids"],
        given=class_names_of(c["given"], names), suggested=class_names_of(c["suggested"], names),
        true=class_names_of(c["true"], names) if c["true"] is not None else None, scores=c["scores"])
    event = st.plotly_chart(figure, key="tune_map_chart", on_select="rerun", selection_mode=("box", "lasso"),
                            config={"scrollZoom": True, "displaylogo": False})
    return plots.selected_sample_ids(event.selection.points if event else [])


def show_map(prepared, result):
    """The UMAP map coloured by status; a box / lasso selection opens the samples below it."""
    st.toggle("Show the map", key="tune_show_map")
    if not st.session_state["tune_show_map"]:
        return
    try:
        layout = map_cache.map_coords(prepared)
    except Exception as exc:  # a failed map must not hide the counts
        state.show_error(exc)
        return
    coords = layout.coords
    if not layout.final:
        st.info("Quick layout (PCA) — the refined UMAP map replaces it when ready (about 20 s for the "
                "demo, a few minutes at a million points; later visits load it from the cache).",
                icon=":material/hourglass_top:")
    table = result.table
    names = np.asarray(prepared.dataset.class_names, dtype=object)
    chosen = draw_map(table, coords, names)
    if len(chosen):
        st.markdown(f"**{len(chosen):,} samples selected on the map**")
        by_index = table.set_index("index").loc[chosen]
        captions = [f"#{i} {names[g]}→{names[s]}" for i, g, s in
                    zip(chosen, by_index["given_label"], by_index["suggested_label"])]
        widgets.image_grid(prepared.dataset, chosen, captions, columns=8, max_images=48)
        if st.button(f"Review these {len(chosen):,} in Inspect", key="tune_send_to_inspect",
                     icon=":material/image_search:"):
            state.send_map_selection(chosen)  # Inspect opens on it (see state.map_selection_requested)
            st.switch_page("pages/4_inspect.py")
    else:
        st.caption("Draw a box or a lasso on the map to see those samples.")


def per_class_view(prepared, result):
    st.dataframe(result.per_class, hide_index=True, width="stretch")
    names = list(prepared.dataset.class_names)
    table = result.table
    families = [f for f, on in (("zero-shot", prepared.fit.has_zeroshot), ("probe", prepared.fit.has_probe)) if on]
    left, right = st.columns([1, 1])
    chosen = left.selectbox("Class", range(len(names)), format_func=lambda k: names[k], key="tune_hist_class")
    family = right.radio("Score", families, horizontal=True, key="tune_hist_family")
    if family is None:
        return
    prefix = "zs" if family == "zero-shot" else "lr"
    rows = table[table["given_label"] == chosen]
    sel = result.config
    hist_col, cons_col = st.columns(2)
    hist_col.plotly_chart(plots.class_histogram(
        rows[f"{prefix}_loss_score"].to_numpy(), rows[f"{prefix}_clean_prob"].to_numpy(),
        theta_gmm=sel.theta_gmm, mixture=mixture_of(prepared, prefix, chosen),
        title=f"{family} loss score — class {names[chosen]}"), key="tune_hist")
    cons_col.plotly_chart(plots.threshold_histogram(
        rows[f"{prefix}_consistency"].to_numpy(), sel.theta_cons,
        title=f"{family} consistency — class {names[chosen]}", x_title="consistency p[y] / max p"),
        key="tune_cons_hist")


def mixture_of(prepared, prefix, k):
    """Means / variances / weights of class ``k``'s mixture, or None (then the curve is drawn)."""
    mixtures = getattr(prepared.fit, f"{prefix}_mixtures")
    if mixtures is None or not mixtures.fitted[k]:
        return None
    return {"means": mixtures.means[k], "variances": mixtures.variances[k], "weights": mixtures.weights[k]}


def confusion_view(prepared, result):
    st.caption("Given label (rows) against the suggested label (columns): bright off-diagonal cells are "
               "the hard noise between similar classes.")
    hide = st.toggle("Hide agreements (diagonal)", value=True, key="tune_hide_diagonal")
    table = result.table
    st.plotly_chart(plots.confusion_heatmap(table["given_label"].to_numpy(), table["suggested_label"].to_numpy(),
                                            prepared.dataset.class_names, hide_agreement=hide), key="tune_confusion")


@st.fragment
def selection_panel(prepared):
    """Everything a threshold move changes; reruns alone, in milliseconds."""
    selection_controls(prepared)
    with state.user_errors(stop=True):
        result = state.result()
    show_counts(result, prepared.true_labels is not None)
    map_tab, class_tab, confusion_tab = st.tabs(["Map", "Per class", "Confusion"])
    with map_tab:
        show_map(prepared, result)
    with class_tab:
        per_class_view(prepared, result)
    with confusion_tab:
        confusion_view(prepared, result)


@st.fragment(run_every=2)
def wait_for_map(prepared):
    """Polls the background map computation, shows its progress, and redraws the page once it is ready."""
    if not map_cache.map_pending(prepared):
        st.rerun()
    st.caption(f"Refining the map: {map_cache.progress_text(map_cache.map_progress(prepared))}")


state.ensure_routed()
st.title("Tune the selection")
st.caption("A sample is kept when it passes every enabled score; the rest are flagged as likely "
           "label issues. Thresholds re-select instantly; the temperature and probe refit (cached).")
prepared = show_prepared()
fit_controls(prepared)
st.session_state.setdefault("tune_show_map", True)
selection_panel(prepared)
if st.session_state["tune_show_map"] and map_cache.map_pending(prepared):
    wait_for_map(prepared)
