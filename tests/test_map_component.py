"""The Tune page's map component: what it sends per render, the files it serves, and how it draws.

The browser tests serve the materialised component from a local folder, post Streamlit's render
messages to its iframe the way Streamlit does, and read back what the component sends.
"""
import base64
import functools
import gzip
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipcleaner_core.metrics import selection_metrics
from clipcleaner_core.projection import display_sample
from clipcleaner_core.selection import apply_decisions
from ui import map_component

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def payload(n=6, *, codes=None, coords=None, scores=None, true=None, given=None, **kwargs):
    rng = np.random.default_rng(0)
    return map_component.map_payload(
        rng.normal(size=(n, 2)) if coords is None else coords,
        np.zeros(n, np.uint8) if codes is None else codes,
        sample_ids=np.arange(100, 100 + n), given=np.zeros(n, int) if given is None else given,
        suggested=np.ones(n, int), class_names=["cat", "dog"], scores=scores, true=true, **kwargs)


def test_status_codes_split_kept_and_flagged_by_the_truth():
    clean = np.array([True, True, False, False])
    noisy = np.array([False, True, True, False])
    codes = map_component.status_codes(clean, noisy)
    assert [map_component.CATEGORIES[c] for c in codes] == [
        "kept", "kept · truly noisy", "flagged · truly noisy", "flagged · truly clean"]
    assert map_component.status_codes(clean).tolist() == [0, 0, 1, 1]  # no truth: kept / flagged only


def test_legend_adds_up_to_the_kept_and_flagged_counts_with_review_decisions():
    """The legend used to say "kept (1,078)" beside a Kept count of 1,082: the 4 others were kept
    but truly noisy. Now the names say which kept they are, and the line under it gives the totals."""
    rng = np.random.default_rng(1)
    n = 500
    table = pd.DataFrame({"index": np.arange(n), "is_clean": rng.random(n) < 0.6, "review_decision": "",
                          "final_label": 0, "is_label_issue": False})
    decisions = pd.DataFrame({"index": [3, 4, 5, 6], "decision": ["keep", "drop", "keep", "drop"],
                              "final_label": [0, 0, 0, 0]})
    table = apply_decisions(table, decisions)
    noisy = rng.random(n) < 0.3
    metrics = selection_metrics(table["is_clean"].to_numpy(), np.zeros(n, int))
    args = payload(n, codes=map_component.status_codes(table["is_clean"].to_numpy(), noisy),
                   true=np.zeros(n, int), reviewed=int((table["review_decision"] != "").sum())).args
    legend = dict(zip(args["categories"], args["counts"]))
    assert legend["kept · truly clean"] + legend["kept · truly noisy"] == metrics["kept"]
    assert legend["flagged · truly noisy"] + legend["flagged · truly clean"] == metrics["flagged"]
    assert "kept" not in args["categories"]  # no bare "kept" that reads like the Kept count
    assert f"Kept {metrics['kept']:,} · Flagged {metrics['flagged']:,}" in args["note"]
    assert "4 of them decided by your review" in args["note"]
    plain = payload(n, codes=map_component.status_codes(table["is_clean"].to_numpy())).args
    assert dict(zip(plain["categories"], plain["counts"]))["kept"] == metrics["kept"]
    assert "review" not in plain["note"]


def test_a_drawn_sample_says_so_under_the_legend():
    args = payload(10, codes=np.array([0, 1] * 5, np.uint8), total=1000).args
    assert "Drawn: a random 10 of 1,000 samples" in args["note"]


def test_each_render_sends_one_status_byte_per_point_and_no_coordinates():
    n = 200_000
    args = payload(n, scores={"a": np.zeros(n), "b": np.zeros(n)}, true=np.zeros(n, int)).args
    assert np.frombuffer(args["codes"], np.uint8).shape == (n,)
    sent = sum(len(v) for v in args.values() if isinstance(v, bytes))
    assert sent == n  # the codes; coordinates and hover data travel as files, once per version
    assert len(repr({k: v for k, v in args.items() if k != "codes"})) < 4_000


def test_a_threshold_move_keeps_both_versions_so_the_map_only_recolours():
    before = payload(codes=np.zeros(6, np.uint8))
    after = payload(codes=np.array([0, 1, 0, 1, 0, 1], np.uint8))
    assert before.args["coords_version"] == after.args["coords_version"]
    assert before.args["hover_version"] == after.args["hover_version"]
    assert before.args["counts"] != after.args["counts"]
    moved = payload(coords=np.ones((6, 2)))
    assert moved.args["coords_version"] != before.args["coords_version"]  # new points: one redraw
    relabelled = payload(given=np.array([1, 0, 0, 0, 0, 0]))
    assert relabelled.args["coords_version"] == before.args["coords_version"]
    assert relabelled.args["hover_version"] != before.args["hover_version"]  # only the hover file changes


def test_payload_refuses_mismatched_lengths_and_unknown_codes():
    with pytest.raises(ValueError, match="differ in length"):
        map_component.map_payload(np.zeros((3, 2)), np.zeros(2, np.uint8), sample_ids=np.arange(3),
                                  given=np.zeros(3), suggested=np.zeros(3), class_names=["a"])
    with pytest.raises(ValueError, match="status codes must be below"):
        payload(3, codes=np.array([0, 1, 9], np.uint8))


def test_layout_encoding_round_trips():
    rng = np.random.default_rng(2)
    coords, ids = rng.normal(size=(1001, 2)).astype(np.float32), rng.permutation(5000)[:1001]
    blob = map_component.encode_layout(coords, ids)
    assert len(blob) == 12 * 1001
    back_coords, back_ids = map_component.decode_layout(blob)
    assert np.array_equal(back_coords, coords) and np.array_equal(back_ids, ids)
    with pytest.raises(ValueError, match="12 bytes a point"):
        map_component.decode_layout(blob[:-1])


def test_hover_encoding_round_trips_at_aligned_offsets():
    fields = {"given": np.array([1, 2, 3], np.uint8), "wide": np.array([7, 300, 65535], np.uint16),
              "score0": np.array([0.5, np.nan, -1.0], np.float32)}
    layout = map_component.hover_layout(fields)
    assert [f["offset"] % 4 for f in layout] == [0, 0, 0]
    back = map_component.decode_hover(map_component.encode_hover(fields), layout)
    for name, values in fields.items():
        np.testing.assert_array_equal(back[name], values)
    with pytest.raises(ValueError, match="expected a 1-D uint8, uint16 or float32"):
        map_component.hover_layout({"bad": np.zeros(3, np.float64)})


def test_many_classes_use_two_byte_labels():
    n = 4
    data = map_component.map_payload(np.zeros((n, 2)), np.zeros(n, np.uint8), sample_ids=np.arange(n),
                                     given=np.array([0, 299, 5, 1]), suggested=np.zeros(n, int),
                                     class_names=[f"c{k}" for k in range(300)])
    assert {f["dtype"] for f in data.args["hover_fields"]} == {"u2"}
    assert data.hover["given"].tolist() == [0, 299, 5, 1]


def test_data_files_are_written_once_per_version_and_decode_to_the_inputs(tmp_path):
    data = payload(50, scores={"label score": np.linspace(0, 1, 50)}, true=np.zeros(50, int))
    map_component.write_data(tmp_path, data)
    layout_file = tmp_path / "data" / data.args["coords_file"]
    coords, ids = map_component.decode_layout(gzip.decompress(layout_file.read_bytes()))
    assert np.array_equal(coords, data.coords) and ids.tolist() == list(range(100, 150))
    hover = map_component.decode_hover(gzip.decompress((tmp_path / "data" / data.args["hover_file"]).read_bytes()),
                                       data.args["hover_fields"])
    assert hover["suggested"].tolist() == [1] * 50 and hover["score0"][-1] == pytest.approx(1.0)
    inode = layout_file.stat().st_ino
    map_component.write_data(tmp_path, payload(50, codes=np.ones(50, np.uint8),
                                                scores={"label score": np.linspace(0, 1, 50)}, true=np.zeros(50, int)))
    assert layout_file.stat().st_ino == inode  # a threshold move writes nothing new


def test_old_data_files_are_pruned(tmp_path):
    for k in range(map_component.KEEP_DATA_FILES + 3):
        map_component.write_data(tmp_path, payload(5, coords=np.full((5, 2), float(k))))
    assert len(list((tmp_path / "data").glob("coords-*.bin.gz"))) == map_component.KEEP_DATA_FILES
    latest = payload(5, coords=np.full((5, 2), float(map_component.KEEP_DATA_FILES + 2)))
    assert (tmp_path / "data" / latest.args["coords_file"]).is_file()


def test_selection_is_read_from_bytes_and_ignored_when_made_on_other_points():
    version = "0123456789abcdef"
    value = version.encode() + np.array([5, 3, 3], "<i4").tobytes()
    assert map_component.selected_ids(value, version).tolist() == [3, 5]
    assert map_component.selected_ids(value, "fedcba9876543210").tolist() == []
    assert map_component.selected_ids(version.encode(), version).tolist() == []  # a cleared selection
    assert map_component.selected_ids(None, version).tolist() == []


def test_materialise_takes_deckgl_from_the_installed_package_once(tmp_path):
    folder = map_component.materialise(tmp_path)
    index, script, bundle = folder / "index.html", folder / "map.js", folder / "deckgl.js"
    assert "map.js" in index.read_text() and '"deckgl.js"' in (folder / "renderers.js").read_text()
    assert "streamlit:componentReady" in script.read_text()
    assert bundle.read_bytes() == map_component.deckgl_js().read_bytes()
    assert b"ScatterplotLayer" in bundle.read_bytes()
    stamps = [p.stat().st_mtime_ns for p in (index, script, bundle)]
    assert map_component.materialise(tmp_path) == folder
    assert [p.stat().st_mtime_ns for p in (index, script, bundle)] == stamps  # nothing rewritten
    script.write_text("stale")
    map_component.materialise(tmp_path)
    assert "streamlit:componentReady" in script.read_text()  # a changed template is rewritten


def test_the_page_loads_nothing_from_the_network():
    for name in map_component.ASSETS:
        text = (map_component.HERE / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


def test_an_unwritable_cache_falls_back(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CLIPCLEANER_CACHE", str(blocker))
    assert map_component.component_folder() is None


def test_no_javascript_bundle_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked if p.endswith((".min.js", "deckgl.js")) or p.endswith("nbextension/static/index.js")]


def test_above_the_cap_a_stated_random_sample_is_drawn():
    rows = display_sample(150_000, max_points=100_000, seed=0)
    assert len(rows) == 100_000 and len(np.unique(rows)) == 100_000
    assert np.array_equal(rows, display_sample(150_000, max_points=100_000, seed=0))  # same sample each run


# ---- in a real browser ------------------------------------------------------------------------------

HARNESS = """<html><body style="margin:0">
<iframe id="f" title="umap_map" src="components/umap_map/index.html" style="width:900px;height:600px;border:0"></iframe>
<script>
window.ready = false; window.values = []; window.heights = [];
window.addEventListener("message", e => {
  const d = e.data;
  if (d.type === "streamlit:componentReady") window.ready = true;
  if (d.type === "streamlit:setFrameHeight") window.heights.push(d.height);
  if (d.type === "streamlit:setComponentValue") window.values.push({type: d.dataType, bytes: Array.from(d.value)});
});
window.renderMap = (args, codes) => {
  const bin = atob(codes), u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  args.codes = u;
  document.getElementById("f").contentWindow.postMessage({type: "streamlit:render", args: args}, "*");
};
</script></body></html>"""
STATE_JS = ("() => { const w = document.getElementById('f').contentWindow.umapMap; "
            "return w ? JSON.parse(JSON.stringify(w)) : null; }")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium")
    root = tmp_path_factory.mktemp("map-served")
    folder = map_component.materialise(root)
    (root / "harness.html").write_text(HARNESS)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    shutil.rmtree(root, ignore_errors=True)


def two_clusters(n_each=600, shift=0.0):
    """Points 0..n-1 around (-5, 0), n..2n-1 around (+5, 0): a box or lasso can take one cluster whole."""
    rng = np.random.default_rng(3)
    left = rng.normal(size=(n_each, 2)) * 0.8 + [-5 + shift, 0]
    right = rng.normal(size=(n_each, 2)) * 0.8 + [5 + shift, 0]
    return np.vstack([left, right])


def cluster_payload(coords, codes, renderer, **kwargs):
    n = len(coords)
    return map_component.map_payload(
        coords, codes, sample_ids=np.arange(n) + 1000, given=np.arange(n) % 3, suggested=(np.arange(n) + 1) % 3,
        class_names=["cat", "dog", "owl"], true=np.arange(n) % 3, scores={"label score": np.linspace(0, 1, n)},
        height=600, renderer=renderer, **kwargs)


def send(page, folder, data):
    map_component.write_data(folder, data)
    args = dict(data.args)
    codes = base64.b64encode(args.pop("codes")).decode()
    page.evaluate("([a, c]) => window.renderMap(a, c)", [args, codes])


def drag(page, frame_box, points):
    page.mouse.move(frame_box["x"] + points[0][0], frame_box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(frame_box["x"] + x, frame_box["y"] + y, steps=4)
    page.mouse.up()


def last_selection(page):
    value = page.evaluate("window.values[window.values.length - 1]")
    assert value["type"] == "bytes"
    blob = bytes(value["bytes"])
    return blob[:map_component.VERSION_CHARS].decode(), np.frombuffer(blob[map_component.VERSION_CHARS:], "<i4")


@pytest.mark.parametrize("renderer", ["canvas", "webgl"])
def test_map_draws_recolours_hovers_and_selects_in_a_browser(served, renderer):
    from playwright.sync_api import sync_playwright

    folder, url = served
    coords = two_clusters()
    n = len(coords)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/harness.html")
        page.wait_for_function("window.ready", timeout=30_000)
        first = cluster_payload(coords, np.zeros(n, np.uint8), renderer)
        send(page, folder, first)
        page.wait_for_function(f"() => ({STATE_JS})()?.renders >= 1 || ({STATE_JS})()?.error", timeout=60_000)
        state = page.evaluate(STATE_JS)
        assert state["error"] is None and state["renderer"] == renderer
        assert state["points"] == n and state["draws"] == 1 and state["legend"] == [f"kept · truly clean ({n:,})"]
        page.wait_for_function(f"() => ({STATE_JS})().hoverReady", timeout=30_000)

        codes = (np.arange(n) % 2).astype(np.uint8)  # a threshold move: recolour only
        send(page, folder, cluster_payload(coords, codes, renderer))
        page.wait_for_function(f"() => ({STATE_JS})().restyles >= 1", timeout=30_000)
        state = page.evaluate(STATE_JS)
        assert state["draws"] == 1 and state["counts"][:2] == [n // 2, n // 2]
        the_map = page.frame_locator("#f")
        assert the_map.locator(".legendtext").all_inner_texts() == [f"kept · truly clean ({n // 2:,})",
                                                                   f"flagged ({n // 2:,})"]

        # the map fills its width: cluster centres sit at about 1/4 and 3/4 of it, below the legend bar
        frame = page.locator("#f").bounding_box()
        map_box = the_map.locator("#map").bounding_box()
        top, mid_y = map_box["y"] - frame["y"], map_box["y"] - frame["y"] + map_box["height"] / 2
        page.mouse.move(frame["x"] + 5, frame["y"] + mid_y)
        for _ in range(3):  # hover over the left cluster's centre: some point's tooltip appears
            page.mouse.move(frame["x"] + map_box["width"] * 0.27, frame["y"] + mid_y, steps=3)
            page.wait_for_timeout(200)
            if the_map.locator("#tip").is_visible():
                break
        tip = the_map.locator("#tip").inner_text()
        assert tip.startswith("#1") and "given:" in tip and "suggested:" in tip and "true:" in tip, tip
        assert "kept · truly clean" in tip or "flagged" in tip

        the_map.get_by_role("button", name="Box").click()  # a box over the left half: the left cluster
        drag(page, frame, [(4, top + 4), (frame["width"] / 2, top + map_box["height"] - 4)])
        page.wait_for_function("window.values.length >= 1", timeout=30_000)
        version, chosen = last_selection(page)
        assert version == first.args["coords_version"]
        assert chosen.tolist() == list(range(1000, 1000 + n // 2))
        assert map_component.selected_ids(bytes(page.evaluate("window.values[0].bytes")), version).size == n // 2

        the_map.get_by_role("button", name="Lasso").click()  # a lasso around the right half
        w, h = map_box["width"], map_box["height"]
        drag(page, frame, [(w * 0.55, top + 4), (w - 4, top + 4), (w - 4, top + h - 4), (w * 0.55, top + h - 4),
                           (w * 0.55, top + 8)])
        page.wait_for_function("window.values.length >= 2", timeout=30_000)
        _, chosen = last_selection(page)
        assert chosen.tolist() == list(range(1000 + n // 2, 1000 + n))
        page.screenshot(path=str(folder.parent / f"map-{renderer}.png"))

        fitted = page.evaluate(STATE_JS)["view"]  # the wheel zooms at the cursor, Pan drags, Reset view fits
        page.mouse.move(frame["x"] + w / 2, frame["y"] + mid_y)
        page.mouse.wheel(0, -300)
        page.wait_for_function(f"(z) => ({STATE_JS})().view.zoom > z + 0.2", arg=fitted["zoom"], timeout=10_000)
        the_map.get_by_role("button", name="Pan").click()
        zoomed = page.evaluate(STATE_JS)["view"]
        drag(page, frame, [(w / 2, mid_y), (w / 2 - 120, mid_y)])
        page.wait_for_function(f"(x) => ({STATE_JS})().view.x > x", arg=zoomed["x"], timeout=10_000)
        assert page.evaluate("window.values.length") == 2  # panning selects nothing
        the_map.get_by_role("button", name="Reset view").click()
        page.wait_for_function(f"(z) => Math.abs(({STATE_JS})().view.zoom - z) < 1e-9", arg=fitted["zoom"],
                               timeout=10_000)

        send(page, folder, cluster_payload(two_clusters(shift=3.0), codes, renderer))  # a new layout
        page.wait_for_function(f"() => ({STATE_JS})().draws >= 2", timeout=30_000)
        state = page.evaluate(STATE_JS)
        assert state["selected"] == 0  # a selection made on the old points is gone
        assert all(r.startswith(url) for r in requests), [r for r in requests if not r.startswith(url)]
        layout_fetches = [r for r in requests if "/data/coords-" in r]
        assert len(layout_fetches) == 2  # once per layout, never per recolour
        browser.close()


def test_an_unknown_renderer_is_refused():
    with pytest.raises(ValueError, match="valid renderers: auto, webgl, canvas"):
        payload(renderer="svg")
