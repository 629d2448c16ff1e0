"""The Inspect page: flagged cards, and review decisions that outlive the session, with undo."""
from streamlit.testing.v1 import AppTest

from app_helpers import open_app
from clipcleaner_core.data import load_dataset
from clipcleaner_core.store import Catalogue

PAGE = "pages/4_inspect.py"


def open_inspect(**session_state) -> AppTest:
    return open_app(PAGE, **session_state)


def relabel_buttons(at: AppTest):
    return [b for b in at.button if (b.key or "").startswith("inspect_relabel_") and b.key[16:].isdigit()
            and not b.disabled]


def decisions():
    return Catalogue().decisions(load_dataset("demo").fingerprint())


def test_inspect_shows_a_page_of_flagged_cards():
    at = open_inspect()
    cards = [b for b in at.button if (b.key or "").startswith("inspect_keep_") and b.key[13:].isdigit()]
    assert 0 < len(cards) <= 24
    assert any("flagged by" in m.value for m in at.markdown)


def test_relabel_is_saved_seen_by_a_new_session_and_undone():
    at = open_inspect()
    button = relabel_buttons(at)[0]
    index = int(button.key.rsplit("_", 1)[1])
    button.click().run()
    assert not at.exception
    saved = decisions().set_index("index")
    assert saved.loc[index, "decision"] == "relabel"

    fresh = open_inspect()  # a new browser session
    assert any(m.value.endswith(f"· {len(decisions())} reviewed") for m in fresh.markdown)
    fresh.selectbox(key="inspect_show").set_value("reviewed").run()
    texts = " ".join(m.value for m in fresh.markdown)
    assert f"#{index}**" in texts and "relabelled" in texts

    fresh.button(key="inspect_undo").click().run()
    assert index not in set(decisions()["index"])


def test_filter_by_given_class_and_page_actions():
    at = open_inspect()
    at.multiselect(key="inspect_given").set_value([2]).run()
    texts = [m.value for m in at.markdown if "given **" in m.value]
    assert texts and all("given **2**" in t for t in texts)
    before = len(decisions())
    at.button(key="inspect_keep_page").click().run()
    assert len(decisions()) == before + len(texts)
    at.button(key="inspect_undo").click().run()
    assert len(decisions()) == before


def test_samples_sent_from_the_tune_map_are_shown_and_only_for_their_dataset():
    sent = [5, 17, 40]
    at = open_inspect(map_selection={"fingerprint": load_dataset("demo").fingerprint(), "ids": sent},
                      inspect_show="selected on the map")
    assert at.selectbox(key="inspect_show").value == "selected on the map"
    shown = sorted(int(b.key[13:]) for b in at.button
                   if (b.key or "").startswith("inspect_keep_") and b.key[13:].isdigit())
    assert shown == sent
    assert any("3 samples match" in c.value for c in at.caption)

    # a selection made on another dataset is not offered
    at.session_state["map_selection"] = {"fingerprint": "another-dataset", "ids": sent}
    at.run()
    assert not at.exception
    assert "selected on the map" not in at.selectbox(key="inspect_show").options
    assert at.selectbox(key="inspect_show").value == "flagged"


def test_header_and_list_count_the_same_flagged_samples_and_say_what_review_changed():
    fingerprint = load_dataset("demo").fingerprint()
    at = open_inspect()
    header = next(m.value for m in at.markdown if "flagged by the scores" in m.value)
    flagged = int(header.split()[0].replace(",", ""))
    assert any(c.value.startswith(f"{flagged:,} samples match") for c in at.caption), header
    card = next(b for b in at.button if (b.key or "").startswith("inspect_keep_") and b.key[13:].isdigit())
    card.click().run()
    try:
        header = next(m.value for m in at.markdown if "flagged by the scores" in m.value)
        assert header.startswith(f"{flagged:,} samples flagged by the scores ({flagged - 1:,} after your review")
        assert any(c.value.startswith(f"{flagged:,} samples match") for c in at.caption)
    finally:
        Catalogue().undo_last(fingerprint)


def test_cards_show_the_true_label_when_it_is_known():
    at = open_inspect()  # the demo keeps its true labels
    texts = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert texts and all("true label **" in t for t in texts)
    assert any("wrong label" in t for t in texts)
