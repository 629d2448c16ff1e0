"""Plotly figure builders for the Tune page: the UMAP map, per-class score histograms, confusion.

Every builder takes plain arrays and returns a ``plotly.graph_objects.Figure``; nothing here talks to
Streamlit, so the figures can be checked in tests and reused in notebooks.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

KEPT, FLAGGED = "kept", "flagged"
STATUS_COLOURS = {
    "kept": "#4C78A8",
    "flagged": "#F58518",
    "kept · truly noisy": "#B279A2",
    "flagged · truly noisy": "#E45756",
    "flagged · truly clean": "#F2CF5B",
}
def selected_sample_ids(points: list[dict]) -> np.ndarray:
    """Dataset indices of the points a box / lasso selection on the map returned (sorted, unique)."""
    ids = []
    for point in points or []:
        custom = point.get("customdata")
        if custom is not None and len(custom):
            ids.append(int(float(custom[0])))
    return np.unique(np.asarray(ids, dtype=np.int64))


def map_status(clean_mask: np.ndarray, is_noisy: np.ndarray | None = None) -> np.ndarray:
    """(N,) status names: kept / flagged, split by the ground truth when it is known."""
    clean_mask = np.asarray(clean_mask, dtype=bool)
    status = np.where(clean_mask, KEPT, FLAGGED).astype(object)
    if is_noisy is not None:
        noisy = np.asarray(is_noisy, dtype=bool)
        status[clean_mask & noisy] = "kept · truly noisy"
        status[~clean_mask & noisy] = "flagged · truly noisy"
        status[~clean_mask & ~noisy] = "flagged · truly clean"
    return status


def umap_figure(
    coords: np.ndarray,
    status: np.ndarray,
    *,
    sample_ids: np.ndarray,
    given: np.ndarray,
    suggested: np.ndarray,
    scores: dict[str, np.ndarray] | None = None,
    true: np.ndarray | None = None,
    height: int = 560,
) -> dict:
    """WebGL scatter of the 2-D map, one trace per status, hover naming the sample.

    Returned as a plain plotly figure dict (``st.plotly_chart`` and ``go.Figure`` accept it): at
    50,000 points building ``go.Figure`` objects would copy every array twice per slider move.

    Args:
        coords: (M, 2) map coordinates of the drawn points.
        status: (M,) status names from :func:`map_status`.
        sample_ids: (M,) dataset indices; shown on hover and returned by a selection as
            ``customdata[0]`` (see :func:`selected_sample_ids`).
        given / suggested: (M,) class names of the given and the suggested label.
        scores: optional {name: (M,) float} shown on hover (e.g. label score, consistencies).
        true: optional (M,) true class names, shown on hover when the truth is known.
    """
    coords = np.asarray(coords, dtype=np.float32)
    scores = scores or {}
    text = "given: " + np.asarray(given, dtype=object) + "<br>suggested: " + np.asarray(suggested, dtype=object)
    if true is not None:
        text = text + "<br>true: " + np.asarray(true, dtype=object)
    text = text.astype(str)
    custom = np.column_stack([np.asarray(sample_ids)] + [np.asarray(v) for v in scores.values()])
    custom = custom.astype(np.float32)
    template = "<b>#%{customdata[0]}</b><br>%{text}" + "".join(
        f"<br>{name}: %{{customdata[{c + 1}]:.3f}}" for c, name in enumerate(scores))
    template += "<extra>%{fullData.name}</extra>"
    status = np.asarray(status)
    traces = []
    for name, colour in STATUS_COLOURS.items():
        members = np.flatnonzero(status == name)
        if not len(members):
            continue
        traces.append({
            "type": "scattergl", "mode": "markers", "name": f"{name} ({len(members):,})",
            "x": coords[members, 0], "y": coords[members, 1],
            "marker": {"size": 4 if len(coords) > 20_000 else 6, "color": colour, "opacity": 0.75},
            "customdata": custom[members], "text": text[members], "hovertemplate": template,
        })
    layout = {
        "height": height, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "dragmode": "lasso",
        "legend": {"orientation": "h", "y": 1.06, "x": 0}, "uirevision": "map",
        "xaxis": {"visible": False}, "yaxis": {"visible": False, "scaleanchor": "x"},
    }
    return {"data": traces, "layout": layout}


def _gaussian(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    var = max(float(var), 1e-8)
    return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def threshold_crossing(grid: np.ndarray, clean_prob: np.ndarray, theta: float) -> float | None:
    """Smallest score on ``grid`` whose clean probability reaches ``theta`` (None if none does)."""
    passing = np.flatnonzero(np.asarray(clean_prob) >= theta)
    return float(grid[passing[0]]) if len(passing) else None


def class_histogram(
    loss_score: np.ndarray,
    clean_prob: np.ndarray | None,
    *,
    theta_gmm: float,
    mixture: dict | None = None,
    title: str = "",
    bins: int = 30,
    height: int = 320,
) -> go.Figure:
    """Histogram of one class's loss scores with the fitted mixture and the threshold on it.

    Args:
        loss_score: (n,) loss scores of the class's samples, in [0, 1] (higher = more likely clean).
        clean_prob: (n,) GMM clean probability of each sample, or None when not fitted.
        theta_gmm: a sample passes when its clean probability >= theta_gmm.
        mixture: optional {"means": (2,), "variances": (2,), "weights": (2,)} of the 1-D GMM. With it
            the two component densities are drawn (scaled to the histogram's counts); without it the
            clean-probability curve is drawn against the right axis.
    """
    loss_score = np.asarray(loss_score, dtype=np.float64)
    fig = go.Figure(go.Histogram(x=loss_score, nbinsx=bins, name="samples", marker_color="#9ecae1",
                                 opacity=0.8))
    grid = np.linspace(0.0, 1.0, 201)
    crossing = None
    if mixture is not None:
        means, variances, weights = (np.asarray(mixture[k], dtype=np.float64).ravel()
                                     for k in ("means", "variances", "weights"))
        scale = len(loss_score) / bins * (max(loss_score.max() - loss_score.min(), 1e-6) if len(loss_score) else 1)
        densities = [w * _gaussian(grid, m, v) for m, v, w in zip(means, variances, weights)]
        clean_component = int(np.argmax(means))
        for k, density in enumerate(densities):
            name = "clean component" if k == clean_component else "noisy component"
            fig.add_trace(go.Scatter(x=grid, y=density * scale, mode="lines", name=name,
                                     line={"color": "#2ca02c" if k == clean_component else "#d62728"}))
        total = np.sum(densities, axis=0)
        posterior = np.divide(densities[clean_component], total, out=np.zeros_like(total), where=total > 0)
        crossing = threshold_crossing(grid, posterior, theta_gmm)
    elif clean_prob is not None and len(loss_score):
        order = np.argsort(loss_score)
        xs, ys = loss_score[order], np.asarray(clean_prob, dtype=np.float64)[order]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="clean probability", yaxis="y2",
                                 line={"color": "#2ca02c"}))
        crossing = threshold_crossing(xs, ys, theta_gmm)
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [0, 1.05],
                                  "title": "clean prob."})
    if crossing is not None:
        fig.add_vline(x=crossing, line_dash="dash", line_color="black",
                      annotation_text=f"θ_gmm = {theta_gmm:.2f}", annotation_position="top left")
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title="loss score (higher = more likely clean)", yaxis_title="samples",
                      legend={"orientation": "h", "y": -0.3}, bargap=0.02)
    return fig


def threshold_histogram(
    values: np.ndarray, threshold: float, *, title: str = "", x_title: str = "", bins: int = 30,
    height: int = 320,
) -> go.Figure:
    """Histogram of a score with the pass threshold drawn on it (samples at or above it pass)."""
    values = np.asarray(values, dtype=np.float64)
    passing = values >= threshold
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=values[passing], name=f"passes ({int(passing.sum())})",
                               marker_color="#4C78A8", xbins={"start": 0, "end": 1.0001, "size": 1 / bins}))
    fig.add_trace(go.Histogram(x=values[~passing], name=f"fails ({int((~passing).sum())})",
                               marker_color="#F58518", xbins={"start": 0, "end": 1.0001, "size": 1 / bins}))
    fig.add_vline(x=threshold, line_dash="dash", line_color="black",
                  annotation_text=f"{threshold:.2f}", annotation_position="top left")
    fig.update_layout(title=title, height=height, barmode="stack", xaxis_title=x_title,
                      yaxis_title="samples", margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def confusion_matrix(given: np.ndarray, suggested: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = given label, column = suggested label."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(given, dtype=np.int64), np.asarray(suggested, dtype=np.int64)), 1)
    return counts


def confusion_heatmap(
    given: np.ndarray,
    suggested: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    hide_agreement: bool = True,
    height: int = 480,
) -> go.Figure:
    """Heatmap of given label (rows) vs suggested label (columns).

    With ``hide_agreement`` the diagonal is blanked so the off-diagonal cells — the "hard noise"
    between similar classes — set the colour scale.
    """
    names = [str(c) for c in class_names]
    counts = confusion_matrix(given, suggested, len(names)).astype(np.float64)
    if hide_agreement:
        np.fill_diagonal(counts, np.nan)
    fig = go.Figure(go.Heatmap(
        z=counts, x=names, y=names, colorscale="Oranges", hoverongaps=False,
        hovertemplate="given %{y} → suggested %{x}: %{z:.0f}<extra></extra>",
        texttemplate="%{z:.0f}" if len(names) <= 20 else None,
    ))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="suggested label", yaxis_title="given label",
                      yaxis={"autorange": "reversed", "type": "category"}, xaxis={"type": "category"})
    return fig
