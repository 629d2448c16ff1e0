"""The Tune page: it renders on the demo, and its widgets change the selection as the method says."""
import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import metric, open_app, run_until_ready
from clipcleaner_core.selection import PRESETS


def open_tune(*, show_map: bool = False) -> AppTest:
    return open_app(tune_show_map=show_map)


def kept(at: AppTest) -> int:
    return int(metric(at, "Kept").replace(",", ""))


def test_tune_opens_on_the_scored_demo_with_counts_and_truth_metrics():
    at = open_tune()
    flagged = int(metric(at, "Flagged").replace(",", ""))
    assert kept(at) + flagged == 1797
    assert 0 < flagged < 1797
    assert 0.0 < float(metric(at, "Precision")) <= 1.0  # the demo knows its true labels
    assert metric(at, "Estimated noise rate").endswith("%")


def test_raising_theta_cons_never_grows_the_clean_set():
    at = open_tune()
    before = kept(at)
    at.slider(key="tune_theta_cons").set_value(0.97).run()
    assert not at.exception
    stricter = kept(at)
    assert stricter < before
    at.slider(key="tune_theta_cons").set_value(0.0).run()
    assert kept(at) >= before


def test_turning_a_score_off_never_shrinks_the_clean_set():
    at = open_tune()
    before = kept(at)
    at.toggle(key="tune_use_lr_consistency").set_value(False).run()
    assert not at.exception
    assert kept(at) >= before


def test_zero_shot_switches_are_disabled_and_explained_without_a_text_tower():
    at = open_tune()
    switch = at.toggle(key="tune_use_zs_loss")
    assert switch.disabled and switch.value is False
    assert "text tower" in switch.help
    assert at.select_slider(key="tune_temperature").disabled


def test_a_paper_preset_sets_the_thresholds():
    at = open_tune()
    presets = [o for o in at.selectbox(key="tune_preset").options if o != "custom"]
    assert presets, "selection.PRESETS should offer the paper's presets"
    assert "webvision" in presets and PRESETS["webvision"]["theta_gmm"] == 0.5
    webvision = "webvision"
    at.slider(key="tune_theta_gmm").set_value(0.2).run()
    at.slider(key="tune_theta_cons").set_value(0.3).run()
    assert at.slider(key="tune_theta_gmm").value == pytest.approx(0.2)
    at.selectbox(key="tune_preset").set_value(webvision).run()
    assert not at.exception
    assert at.slider(key="tune_theta_gmm").value == pytest.approx(0.5)
    assert at.slider(key="tune_theta_cons").value > 0.3
    assert at.slider(key="tune_theta_cons").value == pytest.approx(PRESETS["webvision"]["theta_cons"])
    selection = at.session_state["clipcleaner_active"].selection
    assert (selection.theta_gmm, selection.theta_cons) == pytest.approx((0.5, PRESETS["webvision"]["theta_cons"]))


def test_probe_mode_cross_val_refits_and_keeps_the_page_working():
    at = open_tune()
    at.button_group(key="tune_probe").set_value("cross-val")
    run_until_ready(at)  # the refit runs in the background while the page shows its progress
    assert kept(at) + int(metric(at, "Flagged").replace(",", "")) == 1797


def test_per_class_and_confusion_views_render():
    at = open_tune()
    at.selectbox(key="tune_hist_class").set_value(3).run()
    assert not at.exception
    assert len(at.dataframe) >= 1  # the per-class table
    assert len(at.get("plotly_chart")) >= 3  # histogram, consistency histogram, confusion


def test_map_figure_colours_by_status_and_selection_returns_sample_ids():
    import numpy as np

    from ui import plots

    clean = np.array([True, True, False, False])
    noisy = np.array([False, True, True, False])
    status = plots.map_status(clean, noisy)
    figure = plots.umap_figure(np.zeros((4, 2)), status, sample_ids=np.array([10, 11, 12, 13]),
                               given=np.array(["a"] * 4), suggested=np.array(["b"] * 4),
                               scores={"label score": np.linspace(0, 1, 4)})
    names = [t["name"] for t in figure["data"]]
    assert names == ["kept (1)", "kept · truly noisy (1)", "flagged · truly noisy (1)",
                     "flagged · truly clean (1)"]
    points = [{"customdata": list(t["customdata"][0])} for t in figure["data"] if len(t["customdata"])]
    assert plots.selected_sample_ids(points).tolist() == [10, 11, 12, 13]


def test_histogram_threshold_sits_where_the_clean_probability_reaches_theta():
    import numpy as np

    from ui import plots

    scores = np.linspace(0, 1, 101)
    clean_prob = np.clip((scores - 0.2) * 2, 0, 1)  # reaches 0.5 at score 0.45
    figure = plots.class_histogram(scores, clean_prob, theta_gmm=0.5)
    line = next(s for s in figure.layout.shapes if s.type == "line")
    assert line.x0 == 0.45
    mixture = {"means": [0.2, 0.8], "variances": [0.01, 0.01], "weights": [0.5, 0.5]}
    line = next(s for s in plots.class_histogram(scores, None, theta_gmm=0.5, mixture=mixture).layout.shapes)
    assert abs(line.x0 - 0.5) < 0.01  # equal weights and variances: the posterior crosses 0.5 midway


def test_confusion_counts_given_against_suggested():
    import numpy as np

    from ui import plots

    counts = plots.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
