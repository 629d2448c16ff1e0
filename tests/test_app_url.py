"""The address bar holds the app's state: a reload or a shared link opens the same view, and bad
parameters are ignored with a note, never a crash."""
import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, TIMEOUT, metric, run_until_ready


def fresh(query_params: dict | None = None, page: str | None = None) -> AppTest:
    """A new session (as a reload or a link in another browser opens), with ``query_params``."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["tune_show_map"] = False  # the map has its own tests
    run_until_ready(at, query_params=query_params)
    if page is not None:  # AppTest resolves a page only once the router has registered the pages
        at.switch_page(page)
        run_until_ready(at)
    return at


def params(at: AppTest) -> dict:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def test_a_threshold_move_is_written_to_the_address_and_restored_from_it():
    at = fresh()
    assert params(at) == {}  # the defaults need no parameters
    at.slider(key="tune_theta_cons").set_value(0.6).run()
    at.toggle(key="tune_use_lr_consistency").set_value(False).run()
    url = params(at)
    assert url["cons"] == "0.6" and url["scores"] == "zs_loss,zs_cons,lr_loss"
    kept = metric(at, "Kept")

    reloaded = fresh(url)
    assert reloaded.slider(key="tune_theta_cons").value == pytest.approx(0.6)
    assert reloaded.toggle(key="tune_use_lr_consistency").value is False
    assert metric(reloaded, "Kept") == kept


def test_a_preset_shows_custom_once_a_threshold_is_moved_by_hand():
    at = fresh()
    at.selectbox(key="tune_preset").set_value("webvision").run()
    assert params(at)["preset"] == "webvision" and params(at)["cons"] == "1"
    at.slider(key="tune_theta_cons").set_value(0.9).run()
    assert at.selectbox(key="tune_preset").value == "custom"
    assert "preset" not in params(at)
    assert fresh({"preset": "webvision"}).slider(key="tune_theta_cons").value == pytest.approx(1.0)


def test_bad_and_unknown_parameters_are_ignored_with_a_note():
    at = fresh({"gmm": "abc", "cons": "7", "colour": "red", "data": "/etc", "probe": "magic",
                "page": "-2", "like": "²", "per_page": "¹²"})  # digits that int() refuses
    notes = " ".join(w.value for w in at.warning)
    for name in ("gmm=abc", "cons=7", "colour", "data=/etc", "probe=magic", "page=-2", "like=²",
                 "per_page=¹²"):
        assert name in notes, (name, notes)
    assert at.session_state["clipcleaner_active"].dataset_spec == "demo"
    assert at.slider(key="tune_theta_gmm").value == pytest.approx(0.5)
    at.button(key="dismiss_url_notes").click().run()
    assert not any("ignored" in w.value for w in at.warning)


def test_inspect_filters_and_page_come_from_the_address():
    at = fresh({"show": "all samples", "page": "3", "per_page": "12", "sort": "highest first",
                "given": "2,5"}, page="pages/4_inspect.py")
    assert at.selectbox(key="inspect_show").value == "all samples"
    assert at.number_input(key="inspect_page").value == 3
    assert at.selectbox(key="inspect_page_size").value == 12
    assert at.multiselect(key="inspect_given").value == [2, 5]
    assert params(at)["page"] == "3" and params(at)["given"] == "2,5"
    at.number_input(key="inspect_page").set_value(4).run()
    assert params(at)["page"] == "4"


def _sidebar_summary(model: str):
    from clipcleaner_core.encoders import EncoderSpec
    from ui import state

    state._selection_summary(state.ActiveSettings(encoder=EncoderSpec(model=model, pretrained="openai")))


@pytest.mark.parametrize("model, shows_tau", [("pixels", False), ("ViT-B-32", True)])
def test_the_sidebar_names_tau_only_when_zero_shot_is_on(model, shows_tau):
    at = AppTest.from_function(_sidebar_summary, args=(model,)).run()
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "θ_cons" in sidebar and ("τ" in sidebar) is shows_tau


def test_scores_switched_off_entirely_show_an_error_box_not_a_crash():
    at = fresh({"scores": "none"})
    assert not at.exception
    assert at.error, "switching every score off should say why nothing is selected"
