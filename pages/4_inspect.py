"""Inspect: review the flagged images page by page — keep, drop or relabel them, with undo.

Every decision is written to the catalogue at once, so it survives a browser refresh and an app
restart, and the export and training pages see it.
"""
import numpy as np
import streamlit as st

from clipcleaner_core.schema import SCORE_LABELS as SCORE_NAMES
from ui import neighbours_view, state, widgets

SHOW = state.INSPECT_SHOW
COLUMNS = 4
DECISION_BADGES = {"keep": ":green-badge[kept]", "drop": ":red-badge[dropped]", "relabel": ":blue-badge[relabelled]"}


def load():
    with state.user_errors(stop=True):
        return state.require_prepared(), state.result()


def record(rows, what):
    """Write decisions [(index, decision, label|None)] to the catalogue at once."""
    fingerprint = state.dataset_fingerprint()
    state.catalogue().record_decisions(fingerprint, [(int(i), d, None if l is None else int(l)) for i, d, l in rows])
    st.toast(f"Saved: {what}.", icon=":material/check:")


def undo():
    fingerprint = state.dataset_fingerprint()
    if state.catalogue().undo_last(fingerprint):
        st.toast("Undid the last decision.", icon=":material/undo:")
    else:
        st.toast("Nothing to undo.")


def seed_widgets(names, enabled, map_ids, extra_views=()):
    """Put the remembered view (from the address bar or the last visit) into the filter widgets."""
    view = state.inspect_view()
    offered = view["show"] in (*SHOW, *extra_views) or (map_ids and view["show"] == state.MAP_SELECTION_SHOW)
    if not offered and "inspect_show" not in st.session_state and view["show"] in neighbours_view.VIEWS:
        st.info(f"The “{view['show']}” view is not available here; showing the flagged samples. "
                f"{neighbours_view.unavailable_reason(view['show'])}", icon=":material/info:")
    seeds = {
        "inspect_show": view["show"] if offered else SHOW[0],
        "inspect_given": [k for k in view["given"] if 0 <= k < len(names)],
        "inspect_suggested": [k for k in view["suggested"] if 0 <= k < len(names)],
        "inspect_flagged_by": [s for s in view["by"] if s in enabled],
        "inspect_sort": view["sort"],
        "inspect_page_size": view["per_page"],
        "inspect_page": view["page"],
    }
    for key, value in seeds.items():
        if key not in st.session_state:
            st.session_state[key] = value
    if map_ids and state.map_selection_requested():  # just sent from the Tune map: show it
        st.session_state["inspect_show"] = state.MAP_SELECTION_SHOW
        st.session_state["inspect_page"] = 1


def remember(chosen, page, size):
    """Keep the view for the next visit and in the address bar."""
    state.remember_inspect_view({
        "show": chosen["show"], "given": list(chosen["given"]), "suggested": list(chosen["suggested"]),
        "by": list(chosen["flagged_by"]), "sort": "lowest first" if chosen["ascending"] else "highest first",
        "page": page, "per_page": size, **neighbours_view.view_params(chosen["show"])})


def filters(names, enabled, map_ids, extra_views=()):
    """The filter row; returns the chosen options."""
    show_col, given_col, suggested_col, by_col, sort_col = st.columns([2, 2, 2, 2, 1])
    shows = (*SHOW, *extra_views, state.MAP_SELECTION_SHOW) if map_ids else (*SHOW, *extra_views)
    if st.session_state.get("inspect_show") not in shows:
        st.session_state["inspect_show"] = SHOW[0]
    return {
        "show": show_col.selectbox(
            "Show", shows, key="inspect_show",
            format_func=lambda s: f"{s} ({len(map_ids):,})" if s == state.MAP_SELECTION_SHOW else s),
        "given": given_col.multiselect("Given class", range(len(names)), format_func=names.__getitem__,
                                       key="inspect_given", placeholder="any"),
        "suggested": suggested_col.multiselect("Suggested class", range(len(names)),
                                               format_func=names.__getitem__, key="inspect_suggested",
                                               placeholder="any"),
        "flagged_by": by_col.multiselect("Flagged by", enabled, format_func=lambda s: SCORE_NAMES.get(s, s),
                                         key="inspect_flagged_by", placeholder="any enabled score"),
        "ascending": sort_col.radio("Label score", state.INSPECT_SORT, key="inspect_sort")
        == "lowest first",
    }


def is_reviewed(table):
    """(N,) bool: the sample has a review decision ("" or missing means none)."""
    return table["review_decision"].fillna("").astype(str).ne("").to_numpy()


def matching_rows(result, chosen, map_ids=(), ranked=None):
    """Table rows passing the filters, sorted by label score (or in the order of ``ranked``, the
    rows of a neighbour view)."""
    table = result.table
    flagged = ~np.asarray(result.selection.clean_mask, dtype=bool)
    reviewed = is_reviewed(table)
    if ranked is not None:
        keep = np.zeros(len(table), dtype=bool)
        keep[ranked] = True
    elif chosen["show"] == state.MAP_SELECTION_SHOW:
        keep = table["index"].isin(map_ids).to_numpy()
    else:
        keep = {"flagged": flagged, "flagged, not reviewed": flagged & ~reviewed,
                "reviewed": reviewed, "all samples": np.ones(len(table), dtype=bool)}[chosen["show"]].copy()
    if chosen["given"]:
        keep &= table["given_label"].isin(chosen["given"]).to_numpy()
    if chosen["suggested"]:
        keep &= table["suggested_label"].isin(chosen["suggested"]).to_numpy()
    for name in chosen["flagged_by"]:
        keep &= np.asarray(result.selection.flagged_by[name], dtype=bool)
    if ranked is not None:
        return np.asarray(ranked)[keep[ranked]]
    rows = np.flatnonzero(keep)
    order = np.argsort(table["label_score"].to_numpy()[rows], kind="stable")
    return rows[order] if chosen["ascending"] else rows[order[::-1]]


def pager(count):
    """Page size and number; returns (the slice of matching rows to draw, page, page size)."""
    size_col, page_col, info_col = st.columns([1, 1, 4])
    size = size_col.selectbox("Per page", state.INSPECT_PAGE_SIZES, key="inspect_page_size")
    pages = max(1, -(-count // size))
    if st.session_state.get("inspect_page", 1) > pages:  # fewer matches than when it was chosen
        st.session_state["inspect_page"] = pages
    page = page_col.number_input("Page", 1, pages, key="inspect_page") if pages > 1 else 1
    start = (page - 1) * size
    info_col.caption(f"{count:,} samples match · page {page} of {pages}")
    return slice(start, start + size), int(page), int(size)


def page_actions(page_rows, table):
    """Buttons acting on the whole page, and undo."""
    indices = table["index"].to_numpy()[page_rows]
    suggested = table["suggested_label"].to_numpy()[page_rows]
    keep_col, drop_col, relabel_col, undo_col = st.columns(4)
    keep_col.button("Keep all on page", key="inspect_keep_page", disabled=not len(indices), width="stretch",
                    on_click=record, args=([(i, "keep", None) for i in indices], f"kept {len(indices)}"))
    drop_col.button("Drop all on page", key="inspect_drop_page", disabled=not len(indices), width="stretch",
                    on_click=record, args=([(i, "drop", None) for i in indices], f"dropped {len(indices)}"))
    relabel_col.button("Relabel page to suggestions", key="inspect_relabel_page", disabled=not len(indices),
                       width="stretch", on_click=record,
                       args=([(i, "relabel", s) for i, s in zip(indices, suggested)], f"relabelled {len(indices)}"))
    undo_col.button("Undo last", key="inspect_undo", icon=":material/undo:", width="stretch", on_click=undo)


def card_text(row, names, flagged_by):
    given, suggested = names[int(row.given_label)], names[int(row.suggested_label)]
    lines = [f"**#{int(row.index)}** · given **{given}** → suggested **{suggested}**"]
    true = getattr(row, "true_label", None)
    if true is not None and true == true:  # known ground truth (not NaN)
        mark = ":green[right label]" if int(true) == int(row.given_label) else ":red[wrong label]"
        lines.append(f"true label **{names[int(true)]}** · {mark}")
    lines.append(f"label score {row.label_score:.3f}")
    scores = [f"{label} {getattr(row, column):.2f}" for column, label in
              (("zs_consistency", "zs cons"), ("lr_consistency", "probe cons")) if np.isfinite(getattr(row, column))]
    if scores:
        lines.append(" · ".join(scores))
    if flagged_by:
        lines.append("flagged by " + ", ".join(SCORE_NAMES.get(s, s) for s in flagged_by))
    lines.extend(issue_lines(row))
    decision = row.review_decision if isinstance(row.review_decision, str) else None
    if decision:
        final = names[int(row.final_label)] if decision == "relabel" else ""
        lines.append(f"{DECISION_BADGES.get(decision, decision)} {final}")
    return "  \n".join(lines)


def issue_lines(row):
    """The card's lines for the issue types beyond label noise (none without neighbour evidence)."""
    lines = []
    group = getattr(row, "duplicate_group", -1)
    if group is not None and group == group and int(group) >= 0:
        conflict = " · :orange[labels differ]" if getattr(row, "is_conflicting_duplicate", False) else ""
        lines.append(f"near-duplicate group {int(group)}{conflict}")
    if getattr(row, "is_outlier", False):
        lines.append(f":orange[outlier] · distance {float(row.outlier_score):.2f}")
    if getattr(row, "duplicate_across_splits", False):
        lines.append(f":orange[also in the other split] (#{int(row.cross_split_match)} there)")
    return lines


def card(dataset, row, names, flagged_by, similar=False):
    """One sample: image, labels, scores and its keep / drop / relabel actions."""
    index, suggested = int(row.index), int(row.suggested_label)
    pixels, reason = widgets.thumbnail(dataset, index, px=128)
    if pixels is None and dataset.kind == "embeddings":  # features without their images: expected
        st.caption(f":material/hide_image: no image at `{dataset.paths[index]}` (precomputed "
                   "embeddings; a paths.txt in their folder naming the image files shows them here)")
    elif pixels is None:
        st.warning(f"unreadable: {reason}")
    else:
        st.image(pixels, width="stretch")
    st.markdown(card_text(row, names, flagged_by))
    keep_col, drop_col = st.columns(2)
    keep_col.button("Keep", key=f"inspect_keep_{index}", width="stretch",
                    on_click=record, args=([(index, "keep", None)], f"kept #{index}"))
    drop_col.button("Drop", key=f"inspect_drop_{index}", width="stretch",
                    on_click=record, args=([(index, "drop", None)], f"dropped #{index}"))
    st.button(f"Relabel → {names[suggested]}", key=f"inspect_relabel_{index}", width="stretch",
              disabled=suggested == int(row.given_label),
              on_click=record, args=([(index, "relabel", suggested)], f"relabelled #{index} to {names[suggested]}"))
    if similar:
        neighbours_view.more_like_this_button(index)
    with st.popover("Relabel to…", width="stretch"):
        target = st.selectbox("Class", range(len(names)), index=suggested, format_func=names.__getitem__,
                              key=f"inspect_target_{index}")
        st.button("Apply", key=f"inspect_apply_{index}", on_click=record,
                  args=([(index, "relabel", target)], f"relabelled #{index} to {names[target]}"))


def grid(dataset, table, page_rows, names, result):
    enabled = list(result.selection.enabled)
    flagged_by = {name: np.asarray(result.selection.flagged_by[name], dtype=bool) for name in enabled}
    records = list(table.iloc[page_rows].itertuples(index=False))
    for start in range(0, len(records), COLUMNS):
        for cell, row_number, row in zip(st.columns(COLUMNS), page_rows[start:start + COLUMNS],
                                         records[start:start + COLUMNS]):
            with cell, st.container(border=True):
                card(dataset, row, names, [n for n in enabled if flagged_by[n][row_number]],
                     similar=result.selection.duplicates is not None)


state.ensure_routed()
st.title("Inspect flagged samples")
st.caption("Review the samples the selection flagged. Keep overrides the flag, drop removes the sample, "
           "relabel sets a new label; every decision is saved at once and can be undone.")
st.session_state["current_page"] = "Inspect"  # the address bar then carries the view below
prepared, result = load()
names = list(prepared.dataset.class_names)
flagged_by_scores = ~np.asarray(result.selection.clean_mask, dtype=bool)
reviewed_mask = is_reviewed(result.table)
after_review = "" if result.metrics["flagged"] == flagged_by_scores.sum() else (
    f" ({result.metrics['flagged']:,} after your review: the Flagged count on Tune and Export)")
st.markdown(f"{int(flagged_by_scores.sum()):,} samples flagged by the scores{after_review} · "
            f"{int(reviewed_mask.sum()):,} reviewed")
map_ids = state.map_selection()
enabled_scores = list(result.selection.enabled)
neighbours_view.restore(state.inspect_view())
extra_views = neighbours_view.views(prepared)
seed_widgets(names, enabled_scores, map_ids, extra_views)
chosen = filters(names, enabled_scores, map_ids, extra_views)
neighbours_view.view_controls(chosen["show"])
with state.user_errors(stop=True):
    ranked = neighbours_view.view_rows(prepared, result, chosen["show"])
rows = matching_rows(result, chosen, map_ids, ranked)
page_slice, page_number, page_size = pager(len(rows))
remember(chosen, page_number, page_size)
page_rows = rows[page_slice]
page_actions(page_rows, result.table)
if len(page_rows):
    grid(prepared.dataset, result.table, page_rows, names, result)
else:
    st.info("No samples match these filters.")
