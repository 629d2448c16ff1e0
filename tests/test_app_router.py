"""The entry file routes to every page and opens on the already-scored demo with no clicks."""
from pathlib import Path

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


PAGES = sorted((Path(__file__).resolve().parent.parent / "pages").glob("*.py"))
EXACT_TITLES = {"1_dataset.py": "Dataset", "2_embed.py": "Embed", "5_export.py": "Export"}


def test_every_page_renders():
    assert [p.name for p in PAGES] == ["1_dataset.py", "2_embed.py", "3_tune.py", "4_inspect.py",
                                       "5_export.py", "6_train.py"]
    at = open_app()
    for path in PAGES:
        page = f"pages/{path.name}"
        word = path.stem.split("_", 1)[1].capitalize()  # 3_tune.py -> "Tune" ("Tune the selection")
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        titles = [t.value for t in at.title]
        assert len(titles) == 1 and titles[0].startswith(word), (page, titles)
        if path.name in EXACT_TITLES:
            title = EXACT_TITLES[path.name]
            assert any(t.value == title for t in at.title), page
