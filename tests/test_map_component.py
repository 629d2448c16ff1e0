"""The Tune page's map component: what it sends per render, and the files it serves."""
import subprocess
from pathlib import Path

import numpy as np
import pytest

from clipcleaner_core.projection import display_sample
from ui import map_component

ROOT = Path(__file__).resolve().parent.parent


def payload(n=6, *, codes=None, coords=None, scores=None, true=None):
    rng = np.random.default_rng(0)
    return map_component.map_payload(
        rng.normal(size=(n, 2)) if coords is None else coords,
        np.zeros(n, np.uint8) if codes is None else codes,
        sample_ids=np.arange(100, 100 + n), given=np.zeros(n, int), suggested=np.ones(n, int),
        class_names=["cat", "dog"], scores=scores, true=true)


def test_status_codes_split_kept_and_flagged_by_the_truth():
    clean = np.array([True, True, False, False])
    noisy = np.array([False, True, True, False])
    codes = map_component.status_codes(clean, noisy)
    assert [map_component.CATEGORIES[c] for c in codes] == [
        "kept", "kept · truly noisy", "flagged · truly noisy", "flagged · truly clean"]
    assert map_component.status_codes(clean).tolist() == [0, 0, 1, 1]  # no truth: kept / flagged only


def test_payload_counts_each_status_and_sends_arrays_as_compact_bytes():
    codes = np.array([0, 1, 1, 3, 3, 3], np.uint8)
    args = payload(codes=codes, scores={"label score": np.linspace(0, 1, 6)}, true=np.zeros(6, int))
    assert args["counts"] == [1, 2, 0, 3, 0]
    assert len(args["categories"]) == len(args["palette"]) == 5
    assert np.frombuffer(args["coords"], np.float32).shape == (12,)
    assert np.frombuffer(args["ids"], np.int32).tolist() == [100, 101, 102, 103, 104, 105]
    assert np.frombuffer(args["codes"], np.uint8).tolist() == codes.tolist()
    assert args["label_bytes"] == 1 and len(args["given"]) == len(args["true_labels"]) == 6
    assert args["score_names"] == ["label score"]
    assert np.frombuffer(args["scores"], np.float32)[-1] == pytest.approx(1.0)


def test_a_threshold_move_keeps_the_coordinates_version_so_the_map_only_recolours():
    before = payload(codes=np.zeros(6, np.uint8))
    after = payload(codes=np.array([0, 1, 0, 1, 0, 1], np.uint8))
    assert before["coords_version"] == after["coords_version"]
    assert before["hover_version"] == after["hover_version"]
    assert before["counts"] != after["counts"]
    moved = payload(coords=np.ones((6, 2)))
    assert moved["coords_version"] != before["coords_version"]  # new points: a full redraw


def test_payload_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        map_component.map_payload(np.zeros((3, 2)), np.zeros(2, np.uint8), sample_ids=np.arange(3),
                                  given=np.zeros(3), suggested=np.zeros(3), class_names=["a"])


def test_payload_of_a_large_map_stays_small():
    n = 50_000
    args = payload(n, scores={"a": np.zeros(n), "b": np.zeros(n)}, true=np.zeros(n, int))
    size = sum(len(v) for v in args.values() if isinstance(v, bytes))
    assert size < 40 * n  # ~25 bytes a point; JSON numbers would be several times that


def test_above_the_cap_a_stated_random_sample_is_drawn():
    rows = display_sample(150_000, max_points=100_000, seed=0)
    assert len(rows) == 100_000 and len(np.unique(rows)) == 100_000
    assert np.array_equal(rows, display_sample(150_000, max_points=100_000, seed=0))  # same sample each run


def test_selection_is_ignored_when_it_was_made_on_other_points():
    value = {"ids": [5, 3, 3], "coords_version": "abc"}
    assert map_component.selected_ids(value, "abc").tolist() == [3, 5]
    assert map_component.selected_ids(value, "other").tolist() == []
    assert map_component.selected_ids(None, "abc").tolist() == []


def test_materialise_writes_the_page_and_plotly_once(tmp_path):
    folder = map_component.materialise(tmp_path)
    index, js = folder / "index.html", folder / "plotly.min.js"
    assert "streamlit:componentReady" in index.read_text()
    assert js.stat().st_size == map_component.plotly_js().stat().st_size
    stamps = (index.stat().st_mtime_ns, js.stat().st_mtime_ns)
    assert map_component.materialise(tmp_path) == folder
    assert (index.stat().st_mtime_ns, js.stat().st_mtime_ns) == stamps  # idempotent: nothing rewritten
    index.write_text("stale")
    map_component.materialise(tmp_path)
    assert "streamlit:componentReady" in index.read_text()  # a changed template is rewritten


def test_an_unwritable_cache_falls_back(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(blocker))
    assert map_component.component_folder() is None


def test_plotly_js_is_not_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith("plotly.min.js")]
