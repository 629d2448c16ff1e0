"""Embed page: model picker with weights status, prompt editor, background embedding with cancel."""
import time

import pytest

from app_helpers import open_app, wait_for
from clipcleaner_core import embed
from clipcleaner_core.errors import Cancelled
from clipcleaner_core.testing import make_tiny_clip

PAGE = "pages/2_embed.py"


@pytest.fixture()
def at():
    return open_app(PAGE)


def run_until_done(at, seconds=120):
    """Rerun while the background embedding runs (the browser does this with a timed fragment)."""
    deadline = time.monotonic() + seconds
    while at.session_state["embed_task"].running if "embed_task" in at.session_state else False:
        assert time.monotonic() < deadline, "embedding did not finish"
        time.sleep(0.2)
    return at.run()


def test_missing_clip_weights_say_how_to_get_them(at):
    at.selectbox(key="embed_model").set_value("ViT-B-32").run()
    at.selectbox(key="embed_tag_ViT-B-32").set_value("openai").run()
    assert not at.exception
    assert any("missing" in w.value for w in at.warning)
    assert any("HF_HUB_OFFLINE=1" in m.value for m in at.markdown)
    assert at.button(key="embed_start").disabled


def test_local_checkpoint_embeds_scores_and_becomes_active(at, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    model, weights = make_tiny_clip(tmp_path, name="tiny-app-clip")
    at.run()
    at.selectbox(key="embed_model").set_value(model).run()
    at.text_input(key="embed_ckpt").input(str(weights)).run()
    assert any("local file" in s.value for s in at.success)
    at.button(key="embed_start").click().run()
    at = run_until_done(at)
    assert not at.exception, at.exception
    assert any("now active" in s.value for s in at.success), [e.value for e in at.error]
    active = at.session_state["clipcleaner_active"].encoder
    assert (active.model, active.pretrained) == (model, str(weights.resolve()))
    cached = at.dataframe[-1].value
    assert model in set(cached["model"])


def test_cancel_stops_the_embedding_and_keeps_the_encoder(at, tmp_path, monkeypatch):
    def slow_embed(dataset, spec, *, progress=None, cancel=None, **_):
        for done in range(0, 100_000, 100):
            if cancel():
                raise Cancelled("embedding cancelled")
            progress("embed", done, 100_000, 1000.0)
            time.sleep(0.02)

    monkeypatch.setattr(embed, "embed_dataset", slow_embed)
    # run a different encoder than the active one (pixels), so keeping the active one means something
    monkeypatch.setenv("CLIPCLEANER_DATA_ROOTS", str(tmp_path))
    model, weights = make_tiny_clip(tmp_path, name="tiny-cancel-clip")
    at.run()
    assert at.session_state["clipcleaner_active"].encoder.model == "pixels"
    at.selectbox(key="embed_model").set_value(model).run()
    at.text_input(key="embed_ckpt").input(str(weights)).run()
    assert not at.button(key="embed_start").disabled
    at.number_input(key="embed_batch").set_value(128)
    at.button(key="embed_start").click().run()
    task = at.session_state["embed_task"]
    assert task.running
    wait_for(lambda: task.progress.rate is not None, what="the embedding's first progress report")
    at.run()
    bar = at.get("progress")[0]
    assert "images/s" in bar.proto.text and "left" in bar.proto.text
    at.button(key="embed_cancel").click().run()
    at = run_until_done(at, seconds=10)
    assert any("cancelled" in w.value for w in at.warning)
    assert at.session_state["clipcleaner_active"].encoder.model == "pixels"
    assert at.selectbox(key="embed_model").value == model  # the cancelled run's encoder was not adopted
    assert "embed_task" not in at.session_state
    assert not any("now active" in s.value for s in at.success)


def prompts_download(at):
    """The "Export prompts" download button, or None when the page offers none."""
    return next((b for b in at.get("download_button") if "prompts" in b.proto.label.lower()), None)


def test_prompt_templates_edit_and_export(at):
    key = next(t.key for t in at.text_area if t.key.startswith("templates_"))
    before = prompts_download(at)
    assert before is not None and before.proto.url  # its url is a hash of the file's content
    at.text_area(key=key).input("a blurry photo of the digit {c}.\na drawing of a {c}.").run()
    assert not at.exception
    button = next(b for b in at.get("download_button") if "prompts" in b.proto.label.lower())
    assert button is not None
    assert button.proto.url and button.proto.url != before.proto.url  # the export carries the edit


def test_bad_template_shows_the_fix(at):
    key = next(t.key for t in at.text_area if t.key.startswith("templates_"))
    assert prompts_download(at) is not None
    at.text_area(key=key).input("a photo without a placeholder").run()
    assert not at.exception
    assert any("{c}" in e.value for e in at.error)
    assert prompts_download(at) is None  # an invalid prompt set is not offered for download
