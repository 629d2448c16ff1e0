"""Neighbour evidence in the app: the Tune page's switches and preset, the Inspect page's
duplicate / outlier views, "more like this" and the text search (a tiny CLIP with a text tower)."""
import dataclasses

import numpy as np

from streamlit.testing.v1 import AppTest

from app_helpers import APP, TIMEOUT, metric, open_app, run_until_ready
from clipcleaner_core import clean
from clipcleaner_core.data import load_dataset
from clipcleaner_core.store import Catalogue
from clipcleaner_core.encoders import EncoderSpec
from clipcleaner_core.testing import make_tiny_clip
from ui import neighbours_view, state

TUNE, INSPECT = "pages/3_tune.py", "pages/4_inspect.py"


def decisions():
    return Catalogue().decisions(load_dataset("demo").fingerprint())


def selection(at):
    return at.session_state["clipcleaner_active"].selection


def card_ids(at):
    return [int(b.key.rsplit("_", 1)[1]) for b in at.button
            if (b.key or "").startswith("inspect_keep_") and b.key[13:].isdigit()]


def test_the_neighbour_preset_and_switches_change_the_selection():
    at = open_app(TUNE)
    paper_kept = metric(at, "Kept")
    assert not at.toggle(key="tune_use_knn_agreement").value  # off: the paper's rule
    at.selectbox(key="tune_preset").set_value("paper + neighbours").run()
    chosen = selection(at)
    assert chosen.use_knn_agreement and chosen.combine == "majority"
    assert at.toggle(key="tune_use_knn_agreement").value
    assert at.radio(key="tune_combine").value == "majority"
    assert metric(at, "Kept") != paper_kept
    at.radio(key="tune_combine").set_value("all").run()
    at.toggle(key="tune_use_knn_agreement").set_value(False).run()
    assert not selection(at).use_knn_agreement and selection(at).combine == "all"
    assert at.session_state["clipcleaner_active"].preset == state.CUSTOM
    assert metric(at, "Kept") == paper_kept  # back to the paper's rule exactly
    at.toggle(key="tune_use_knn_agreement").set_value(True).run()
    at.slider(key="tune_theta_knn").set_value(0.9).run()
    strict = metric(at, "Kept")
    at.slider(key="tune_theta_knn").set_value(0.1).run()
    assert int(metric(at, "Kept").replace(",", "")) > int(strict.replace(",", ""))


def test_outlier_and_duplicate_views_list_what_the_table_flags():
    table = clean("demo").table  # the app's defaults, from the same cache
    at = open_app(INSPECT)
    shows = at.selectbox(key="inspect_show").options
    assert {neighbours_view.OUTLIERS, neighbours_view.DUPLICATES, neighbours_view.CONFLICTS} <= set(shows)
    assert neighbours_view.TEXT not in shows  # the pixels encoder has no text tower
    for show, flagged in ((neighbours_view.OUTLIERS, table["is_outlier"]),
                          (neighbours_view.DUPLICATES, table["duplicate_group"] >= 0),
                          (neighbours_view.CONFLICTS, table["is_conflicting_duplicate"])):
        at.selectbox(key="inspect_show").set_value(show).run()
        assert not at.exception
        caption = next(c.value for c in at.caption if "samples match" in c.value)
        assert caption.startswith(f"{int(flagged.sum()):,} samples match")
        expected = set(table.loc[flagged.to_numpy(dtype=bool), "index"])
        assert set(card_ids(at)) <= expected
    assert table["is_outlier"].sum() > 0  # the demo has some: the view was not trivially empty
    outliers = table[table["is_outlier"]].sort_values("outlier_score", ascending=False)
    at.selectbox(key="inspect_show").set_value(neighbours_view.OUTLIERS).run()
    assert card_ids(at)[0] == int(outliers["index"].iloc[0])  # farthest first
    cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert cards and all("outlier" in text for text in cards)  # each card says why it is in the view
    at.selectbox(key="inspect_show").set_value(neighbours_view.CONFLICTS).run()
    first = int(card_ids(at)[0])
    group = int(table.loc[table["index"] == first, "duplicate_group"].iloc[0])
    text = next(m.value for m in at.markdown if m.value.startswith(f"**#{first}**"))
    assert f"near-duplicate group {group} · :orange[labels differ]" in text


def test_more_like_this_opens_the_nearest_samples_with_the_same_actions():
    at = open_app(INSPECT)
    first = card_ids(at)[0]
    at.button(key=f"inspect_similar_{first}").click().run()
    assert not at.exception
    assert at.selectbox(key="inspect_show").value == neighbours_view.SIMILAR
    ids = card_ids(at)
    assert ids[0] == first and len(ids) == at.selectbox(key="inspect_page_size").value
    before = len(decisions())
    at.button(key=f"inspect_drop_{ids[1]}").click().run()  # review actions work on the results
    assert not at.exception
    assert decisions().set_index("index").loc[ids[1], "decision"] == "drop"
    at.button(key="inspect_undo").click().run()  # leave the shared catalogue as it was
    assert len(decisions()) == before


def test_a_neighbour_view_travels_in_the_address():
    at = open_app(INSPECT)
    first = card_ids(at)[0]
    at.button(key=f"inspect_similar_{first}").click().run()
    params = url(at)
    assert params["show"] == neighbours_view.SIMILAR and params["like"] == str(first)
    # a reload, or the link in another session, opens the same view without a note
    other = AppTest.from_file(APP, default_timeout=TIMEOUT)
    other.session_state["tune_show_map"] = False
    run_until_ready(other, query_params=params)
    other.switch_page(INSPECT)
    run_until_ready(other)
    assert not any("ignored" in w.value for w in other.warning)
    assert not any("not available" in i.value for i in other.info)
    assert other.selectbox(key="inspect_show").value == neighbours_view.SIMILAR
    assert card_ids(other)[0] == first
    at.selectbox(key="inspect_show").set_value(neighbours_view.OUTLIERS).run()
    assert url(at)["show"] == neighbours_view.OUTLIERS and "like" not in url(at)
    # a sample the dataset does not have: said so, no cards
    gone = AppTest.from_file(APP, default_timeout=TIMEOUT)
    gone.session_state["tune_show_map"] = False
    run_until_ready(gone, query_params={**params, "like": "999999"})
    gone.switch_page(INSPECT)
    run_until_ready(gone)
    assert not card_ids(gone) and any("no sample #999999" in w.value for w in gone.warning)
    # without neighbour evidence (k = 0) the view is not offered: a note, and the flagged samples
    none = AppTest.from_file(APP, default_timeout=TIMEOUT)
    none.session_state["tune_show_map"] = False
    run_until_ready(none, query_params={"show": neighbours_view.OUTLIERS, "k": "0"})
    none.switch_page(INSPECT)
    run_until_ready(none)
    assert none.selectbox(key="inspect_show").value == state.INSPECT_SHOW[0]
    assert any("outliers" in i.value and "not available" in i.value for i in none.info)


def test_text_search_ranks_the_dataset_by_a_typed_description(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    model, weights = make_tiny_clip(tmp_path, name="tiny-search-clip")
    settings = dataclasses.replace(state.ActiveSettings(),
                                   encoder=EncoderSpec(model=model, pretrained=str(weights)))
    at = open_app(INSPECT, clipcleaner_active=settings)
    assert neighbours_view.TEXT in at.selectbox(key="inspect_show").options
    at.selectbox(key="inspect_show").set_value(neighbours_view.TEXT).run()
    assert not card_ids(at)  # nothing typed yet
    text = "a photo of a 7 & a '#' sign, + 50% blur?"  # characters an address must escape
    at.text_input(key=neighbours_view.TEXT_KEY).input(text).run()
    assert not at.exception, [e.value for e in at.exception]
    ids = card_ids(at)
    assert len(ids) == at.selectbox(key="inspect_page_size").value
    assert len(set(ids)) == len(ids) and np.all(np.asarray(ids) >= 0)
    params = url(at)
    assert params["show"] == neighbours_view.TEXT and params["q"] == text
    other = AppTest.from_file(APP, default_timeout=TIMEOUT)  # the link, opened elsewhere
    other.session_state["tune_show_map"] = False
    run_until_ready(other, query_params=params)
    other.switch_page(INSPECT)
    run_until_ready(other)
    assert other.text_input(key=neighbours_view.TEXT_KEY).value == text
    assert card_ids(other) == ids


def test_above_the_exact_limit_the_neighbour_evidence_is_computed_on_request(monkeypatch):
    from clipcleaner_core import knn_index

    monkeypatch.setattr(knn_index, "EXACT_MAX_ROWS", 100)  # the demo's 1,797 samples count as large
    from ui import background

    monkeypatch.setattr(state, "_PREPARED", state.PreparedStore(entries=4))  # no fit from earlier tests
    monkeypatch.setattr(background, "_shared", {})
    at = open_app(TUNE)
    assert at.session_state["clipcleaner_active"].scoring.neighbours is None
    assert not any((t.key or "") == "tune_use_knn_agreement" for t in at.toggle)  # no graph yet
    at.button(key="tune_compute_neighbours").click().run()
    state_now = at.session_state["clipcleaner_active"]
    assert state_now.scoring.neighbours == 10
    for _ in range(60):  # the refit runs in the background
        if any((t.key or "") == "tune_use_knn_agreement" for t in at.toggle):
            break
        at.run()
    assert not at.toggle(key="tune_use_knn_agreement").value  # available, still off by default


def url(at):
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def test_the_neighbour_settings_travel_in_the_address_and_show_in_the_sidebar():
    at = open_app(TUNE)
    assert not {"nb", "knn", "combine", "k"} & set(url(at))  # the paper's rule: nothing written
    at.toggle(key="tune_use_knn_agreement").set_value(True).run()
    at.slider(key="tune_theta_knn").set_value(0.4).run()
    at.radio(key="tune_combine").set_value("majority").run()
    params = url(at)
    assert params["nb"] == "knn" and params["knn"] == "0.4" and params["combine"] == "majority"
    # a link opened in another session restores them
    other = AppTest.from_file(APP, default_timeout=TIMEOUT)
    other.session_state["tune_show_map"] = False
    run_until_ready(other, query_params=params)
    chosen = selection(other)
    assert chosen.use_knn_agreement and not chosen.use_lemon
    assert chosen.theta_knn == 0.4 and chosen.combine == "majority"
    assert other.toggle(key="tune_use_knn_agreement").value
    assert other.slider(key="tune_theta_knn").value == 0.4
    # values that cannot be used are named in a note and ignored
    bad = AppTest.from_file(APP, default_timeout=TIMEOUT)
    bad.session_state["tune_show_map"] = False
    run_until_ready(bad, query_params={"nb": "knn,magic", "knn": "2", "combine": "any", "k": "x"})
    assert not selection(bad).use_knn_agreement and selection(bad).combine == "all"
    notes = bad.session_state["url_notes"]
    assert {n.split("=")[0].strip("`") for n in notes} == {"nb", "knn", "combine", "k"}


def _sidebar_summary():
    import dataclasses

    from ui import state

    selection = dataclasses.replace(state.SelectionConfig(), use_knn_agreement=True, theta_knn=0.4,
                                    combine="majority")
    state._selection_summary(state.ActiveSettings(selection=selection))


def test_the_sidebar_names_the_neighbour_scores_and_their_threshold():
    at = AppTest.from_function(_sidebar_summary).run()
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "knn" in sidebar and "θ_knn 0.40" in sidebar and "at least half" in sidebar
    assert "lemon" not in sidebar  # the pixels encoder has no text tower


def test_k_from_the_address_and_the_tune_page_refits_the_neighbour_evidence():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["tune_show_map"] = False
    run_until_ready(at, query_params={"k": "6", "nb": "knn"})
    assert at.session_state["clipcleaner_active"].scoring.neighbours == 6
    assert at.number_input(key="tune_neighbours_k").value == 6
    at.number_input(key="tune_neighbours_k").set_value(8).run()
    run_until_ready(at)
    assert at.session_state["clipcleaner_active"].scoring.neighbours == 8
    assert url(at)["k"] == "8"
    assert at.number_input(key="tune_neighbours_k").value == 8


def test_inspect_checks_the_test_split_and_lists_the_sample_on_both_sides(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    rng = np.random.default_rng(20)
    rows = []
    for i in range(60):
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        if i == 50:  # the test split holds a copy of training image 7
            pixels = np.asarray(Image.open(tmp_path / "img7.png"))
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        rows.append(f"img{i}.png,{i % 3},{'test' if i >= 48 else 'train'}")
    (tmp_path / "data.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    settings = dataclasses.replace(state.ActiveSettings(), dataset_spec=str(tmp_path / "data.csv"))
    at = open_app(INSPECT, clipcleaner_active=settings)
    assert neighbours_view.ACROSS in at.selectbox(key="inspect_show").options
    at.selectbox(key="inspect_show").set_value(neighbours_view.ACROSS).run()
    assert not card_ids(at)  # not checked yet: a button offers it
    at.button(key="inspect_check_splits").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.run()
    assert card_ids(at) == [7]
