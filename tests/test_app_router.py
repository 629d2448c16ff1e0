"""The entry file routes to every page and opens on the already-scored demo with no clicks."""
from app_helpers import open_app


def test_first_launch_opens_tune_on_the_scored_demo():
    at = open_app()
    assert any(t.value.startswith("Tune") for t in at.title), [t.value for t in at.title]
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "demo" in sidebar and "pixels" in sidebar


def test_banner_names_the_encoder_and_how_to_get_clip_weights():
    at = open_app()
    banner = " ".join(i.value for i in at.info)
    assert "pixel features" in banner
    how_to = " ".join(m.value for e in at.expander if e.label == "How to get CLIP weights" for m in e.markdown)
    assert "HF_HUB_OFFLINE=1" in how_to and "checkpoint" in how_to
    at.button(key="hide_weights_help_button").click().run()
    assert at.session_state["hide_weights_help"]  # later runs show a one-line caption instead


def test_every_page_renders():
    at = open_app()
    for page, title in [("pages/1_dataset.py", "Dataset"), ("pages/2_embed.py", "Embed"),
                        ("pages/5_export.py", "Export")]:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert any(t.value == title for t in at.title), page
