"""How fast the Tune page and its map feel at 50,000 and 1,000,000 samples, in a real headless Chromium.

Builds a synthetic 50k-image manifest (16x16 PNGs, one seeded pattern per class, 30% symmetric
label noise; reused on later runs), embeds it with the weight-free ``pixels`` encoder, fits the
scores and computes the UMAP map once (all cached), then starts ``streamlit run app.py`` and prints:

* the one-off costs: embedding + fit, and the cold UMAP;
* time to first map on the Tune page when the map is cached (first and a later visit);
* slider-move-to-updated-count latency and slider-move-to-updated-map latency (median of N moves;
  the map's legend counts inside the map component's iframe).

Then, at ``--map-n`` points (default 1,000,000), the map component alone: the whole app at a million
samples would first need a fit of a million images, so a minimal Streamlit page
(``benchmarks/map_app.py``) serves the component with cached synthetic arrays (clustered 2-D
points, 100 classes, 30% noise) and does per rerun what the Tune page's map does. It prints:

* first draw of the cached map on a first visit (the component writes its data files, the browser
  fetches and draws them) and on a reload (files already written);
* slider-move-to-recoloured-map latency (median of N moves; the legend inside the iframe);
* a box selection's round trip back to Python (the "N samples selected" text);
* what one render sends, against sending the coordinates with every render.

Headless Chromium has no GPU, so its WebGL is SwiftShader (every vertex on the CPU); the component
then draws on a 2-D canvas (``renderer`` "auto"). ``--renderer webgl`` forces deck.gl to measure it.

Run: ``python benchmarks/bench_app_browser.py [--n 50000] [--map-n 1000000] [--moves 5] [--skip-app]
[--renderer auto|webgl|canvas] [--work DIR]``.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_manifest(folder: Path, n: int, *, noise_rate: float = 0.3, seed: int = 0) -> Path:
    """n 16x16 PNGs (class = a seeded pattern + per-image noise) and labels.csv with true labels."""
    from PIL import Image
    import pandas as pd

    manifest = folder / "labels.csv"
    if manifest.exists() and len(pd.read_csv(manifest)) == n:
        return manifest
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, size=(len(CLASSES), 16, 16, 3))
    true = rng.integers(0, len(CLASSES), size=n)
    given = true.copy()
    flip = rng.random(n) < noise_rate
    given[flip] = rng.integers(0, len(CLASSES), size=int(flip.sum()))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = 0.1 * templates[true[i]] + 0.9 * rng.uniform(0, 255, size=(16, 16, 3))  # classes overlap
        path = f"images/{i:06d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(folder / path)
        paths.append(path)
    pd.DataFrame({"path": paths, "label": [CLASSES[k] for k in given],
                  "true_label": [CLASSES[k] for k in true]}).to_csv(manifest, index=False)
    return manifest


def precompute(manifest: Path, cache: Path) -> dict:
    """Embed, fit and map once in this process, exactly as the app will ask for them."""
    from clipcleaner_core.data import load_dataset
    from clipcleaner_core.encoders import EncoderSpec
    from clipcleaner_core.pipeline import prepare
    from ui.map_cache import compute_map

    started = time.perf_counter()
    dataset = load_dataset(str(manifest), format="manifest")
    prepared = prepare(dataset, EncoderSpec(model="pixels"), cache_root=cache)
    prepared_s = time.perf_counter() - started
    started = time.perf_counter()
    compute_map(prepared, cache_root=cache)
    return {"n": len(dataset), "prepare_s": prepared_s, "umap_s": time.perf_counter() - started}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(env: dict, log_path: Path, script: str = "app.py") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError("streamlit did not start")


FLAGGED_JS = """() => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
  .find(e => e.innerText.includes('Flagged'));
  return m ? m.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null; }"""
MAP_DOC = "document.querySelector('iframe[title*=\"umap_map\"]')?.contentDocument"
LEGEND_JS = f"""() => {{ const doc = {MAP_DOC}; if (!doc) return null;
  const t = [...doc.querySelectorAll('.legendtext')].map(e => e.textContent).find(s => s.startsWith('flagged'));
  return t || null; }}"""
MAP_STATE_JS = """() => { const f = document.querySelector('iframe[title*="umap_map"]');
  return f && f.contentWindow.umapMap ? JSON.parse(JSON.stringify(f.contentWindow.umapMap)) : null; }"""


def measure(url: str, manifest: Path, moves: int, shots: Path) -> dict:
    import pandas as pd
    from playwright.sync_api import expect, sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url)
        # the router's own sidebar (not the provisional page list shown before it first runs)
        expect(page.get_by_text("Active dataset")).to_be_visible(timeout=300_000)
        nav = page.locator('[data-testid="stSidebarNav"] a')
        nav.filter(has_text="Dataset").first.click()
        page.get_by_text("Manifest file (CSV / Parquet)").click()
        page.locator(".st-key-path_manifest input").fill(str(manifest))
        page.locator(".st-key-path_manifest input").press("Enter")
        page.wait_for_timeout(1500)
        page.locator(".st-key-load_manifest button").click()
        expect(page.get_by_text(f"{len(pd.read_csv(manifest)):,} images")).to_be_visible(timeout=300_000)
        for visit in ("first", "later"):
            nav.filter(has_text="Dataset" if visit == "later" else "Embed").first.click()
            page.wait_for_timeout(1000)
            started = time.perf_counter()
            nav.filter(has_text="Tune").first.click()
            try:
                page.wait_for_function(FLAGGED_JS, timeout=300_000)
                out[f"counts_{visit}_s"] = time.perf_counter() - started
                page.wait_for_function(LEGEND_JS, timeout=300_000)
                out[f"map_{visit}_s"] = time.perf_counter() - started
            except Exception:
                page.screenshot(path=str(shots / f"bench-tune-timeout-{visit}.png"), full_page=True)
                raise
        page.wait_for_timeout(1000)
        page.screenshot(path=str(shots / "bench-tune-50k.png"), full_page=True)
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="θ_cons").locator('input[type="range"]')
        slider.focus()
        count_s, map_s = [], []
        for _ in range(moves):
            count_before, legend_before = page.evaluate(FLAGGED_JS), page.evaluate(LEGEND_JS)
            started = time.perf_counter()
            slider.press("ArrowRight")
            page.wait_for_function(f"() => ({FLAGGED_JS})() !== {count_before!r}", timeout=30_000, polling=10)
            count_s.append(time.perf_counter() - started)
            page.wait_for_function(f"() => ({LEGEND_JS})() !== {legend_before!r}", timeout=30_000, polling=10)
            map_s.append(time.perf_counter() - started)
            print(f"  move: flagged {count_before} -> {page.evaluate(FLAGGED_JS)}", flush=True)
            page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "bench-tune-50k-after-moves.png"), full_page=True)
        out["map_state"] = page.evaluate(MAP_STATE_JS)
        out["slider_count_s"], out["slider_map_s"] = count_s, map_s
        out["selection_s"], out["selection_text"] = select_and_review(page, shots)
        browser.close()
    return out


def draw_box(page, corner, opposite) -> float:
    """Drag a box on the Tune map between two corners given as fractions of the map's width and
    height; returns ``time.perf_counter()`` at the start of the drag."""
    the_map = page.locator('iframe[title*="umap_map"]').content_frame
    the_map.get_by_role("button", name="Box").click()
    box = the_map.locator("#map").bounding_box()
    started = time.perf_counter()
    page.mouse.move(box["x"] + box["width"] * corner[0], box["y"] + box["height"] * corner[1])
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * opposite[0], box["y"] + box["height"] * opposite[1],
                    steps=5)
    page.mouse.up()
    return started


def select_and_review(page, shots: Path) -> tuple[float, str]:
    """A box over the middle of the Tune map, then "Review these N in Inspect": seconds until Inspect
    lists them, and what it says."""
    from playwright.sync_api import expect

    started = draw_box(page, (0.35, 0.35), (0.55, 0.6))
    expect(page.get_by_text("samples selected on the map").first).to_be_visible(timeout=60_000)
    selected = page.get_by_text("samples selected on the map").first.inner_text().split()[0]
    page.locator(".st-key-tune_send_to_inspect button").click()
    expect(page.get_by_text(f"{selected} samples match")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "bench-inspect-map-selection.png"))
    return time.perf_counter() - started, f"{selected} samples selected on the map, listed in Inspect"


def make_map_arrays(folder: Path, n: int, *, classes: int = 100, noise_rate: float = 0.3, seed: int = 0) -> Path:
    """Cached synthetic map data: clustered 2-D points (one blob per class), labels, a score."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "score.npy").exists() and len(np.load(folder / "score.npy", mmap_mode="r")) == n:
        return folder
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(classes, 2))
    spread = rng.uniform(0.4, 1.6, size=classes)
    true = rng.integers(0, classes, size=n)
    coords = (centres[true] + rng.normal(size=(n, 2)) * spread[true, None]).astype(np.float32)
    given = true.copy()
    flip = rng.random(n) < noise_rate
    given[flip] = rng.integers(0, classes, size=int(flip.sum()))
    score = np.where(given == true, rng.beta(5, 2, size=n), rng.beta(2, 5, size=n)).astype(np.float32)
    for name, values in (("coords", coords), ("given", given.astype(np.int32)), ("true", true.astype(np.int32)),
                         ("score", score)):
        np.save(folder / f"{name}.npy", values)
    return folder


MAP_LEGEND_JS = f"""() => {{ const doc = {MAP_DOC}; if (!doc) return null;
  return [...doc.querySelectorAll('.legendtext')].map(e => e.textContent).join(' | ') || null; }}"""


def measure_map(url: str, n: int, moves: int, shots: Path, data_folder: Path) -> dict:
    """First draw (cold: data files written and fetched; warm: on a reload), slider moves, a box."""
    from playwright.sync_api import expect, sync_playwright

    for old in data_folder.glob("*.bin.gz"):  # a cold first draw: the component writes its files again
        old.unlink()
    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{url}/_stcore/health")
        for visit in ("first", "reload"):
            started, epoch_ms = time.perf_counter(), time.time() * 1000
            page.goto(url)
            page.wait_for_function(f"() => ({MAP_STATE_JS})()?.renders >= 1 || ({MAP_STATE_JS})()?.error",
                                   timeout=300_000, polling=20)
            out[f"draw_{visit}_s"] = time.perf_counter() - started
            out[f"state_{visit}"] = state = page.evaluate(MAP_STATE_JS)
            steps = ", ".join(f"{name} {(at - epoch_ms) / 1000:.2f} s" for name, at in state.get("marks", {}).items())
            print(f"  {visit} visit: map drawn after {out[f'draw_{visit}_s']:.2f} s ({steps})", flush=True)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"bench-map-{n}.png"))
        slider = page.locator('[data-testid="stSlider"]').locator('input[type="range"]')
        slider.focus()
        map_s, count_s = [], []
        for _ in range(moves):
            legend_before, count_before = page.evaluate(MAP_LEGEND_JS), page.evaluate(FLAGGED_JS)
            started = time.perf_counter()
            slider.press("ArrowRight")
            page.wait_for_function(f"() => ({FLAGGED_JS})() !== {count_before!r}", timeout=60_000, polling=10)
            count_s.append(time.perf_counter() - started)
            page.wait_for_function(f"() => ({MAP_LEGEND_JS})() !== {legend_before!r}", timeout=60_000, polling=10)
            map_s.append(time.perf_counter() - started)
            page.wait_for_timeout(300)
        out["slider_count_s"], out["slider_map_s"] = count_s, map_s
        out["state_moves"] = page.evaluate(MAP_STATE_JS)
        started = draw_box(page, (0.3, 0.3), (0.6, 0.7))
        expect(page.get_by_text("samples selected on the map").first).not_to_have_text(
            "0 samples selected on the map", timeout=60_000)
        out["box_s"] = time.perf_counter() - started
        out["box_text"] = page.get_by_text("samples selected on the map").first.inner_text()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"bench-map-{n}-box.png"))
        browser.close()
    return out


def render_sizes(n: int) -> dict:
    """Bytes one render sends now, and what sending coordinates, ids, labels and scores would add."""
    from ui import map_component

    rng = np.random.default_rng(0)
    payload = map_component.map_payload(
        rng.normal(size=(n, 2)), np.zeros(n, np.uint8), sample_ids=np.arange(n), given=np.zeros(n, int),
        suggested=np.zeros(n, int), class_names=["a", "b"], scores={"label score": np.zeros(n)},
        true=np.zeros(n, int))
    per_render = len(payload.args["codes"]) + len(repr({k: v for k, v in payload.args.items() if k != "codes"}))
    files = (len(map_component.encode_layout(payload.coords, payload.ids))
             + len(map_component.encode_hover(payload.hover)))
    return {"per_render": per_render, "files_once": files, "as_json_list": len(str(payload.coords.round(6).tolist()))}


def run_map(args, cache: Path, shots: Path) -> None:
    started = time.perf_counter()
    folder = make_map_arrays(args.work / f"map-{args.map_n}", args.map_n)
    print(f"map data: {args.map_n:,} synthetic points ready in {time.perf_counter() - started:.1f} s")
    env = {**os.environ, "CLIPCLEANER_CACHE": str(cache), "CLIPCLEANER_MAP_BENCH": str(folder),
           "CLIPCLEANER_MAP_RENDERER": args.renderer}
    proc, url = start_app(env, shots / "bench-map-streamlit.log", script="benchmarks/map_app.py")
    try:
        result = measure_map(url, args.map_n, args.moves, shots, cache / "components" / "umap_map" / "data")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    state = result["state_first"] or {}
    print(f"map of {args.map_n:,} points ({state.get('renderer')} renderer): first draw of the cached map "
          f"{result['draw_first_s']:.2f} s (files written + fetched: {state.get('fetchMs', 0):.0f} ms to fetch "
          f"the layout, {state.get('lastMs', 0):.0f} ms in the iframe); after a reload {result['draw_reload_s']:.2f} s")
    counts, maps = result["slider_count_s"], result["slider_map_s"]
    print(f"slider move -> updated count: median {statistics.median(counts) * 1000:.0f} ms "
          f"(moves: {', '.join(f'{s * 1000:.0f}' for s in counts)} ms)")
    print(f"slider move -> recoloured map: median {statistics.median(maps) * 1000:.0f} ms "
          f"(moves: {', '.join(f'{s * 1000:.0f}' for s in maps)} ms)")
    moved = result["state_moves"] or {}
    print(f"map component: {moved.get('draws')} full draws, {moved.get('restyles')} in-place recolours, "
          f"last recolour {moved.get('lastMs', float('nan')):.0f} ms inside the iframe")
    print(f"box selection -> '{result['box_text']}' in Python after {result['box_s']:.2f} s")
    sizes = render_sizes(args.map_n)
    print(f"one render sends {sizes['per_render'] / 1e6:.2f} MB (a status byte per point + the legend); "
          f"the layout and hover files, fetched once per version: {sizes['files_once'] / 1e6:.1f} MB; "
          f"the coordinates alone as a JSON list would be {sizes['as_json_list'] / 1e6:.1f} MB per render")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--map-n", type=int, default=1_000_000, help="points of the map-only run (0: skip it)")
    parser.add_argument("--skip-app", action="store_true", help="only the map-only run")
    parser.add_argument("--renderer", default="auto", choices=("auto", "webgl", "canvas"))
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "cache" / "bench-app-browser")
    args = parser.parse_args(argv)
    cache, shots = args.work / "cache", ROOT / "test-artifacts"
    for folder in (cache, shots):
        folder.mkdir(parents=True, exist_ok=True)
    os.environ["CLIPCLEANER_CACHE"] = str(cache)
    if not args.skip_app:
        run_app(args, cache, shots)
    if args.map_n:
        run_map(args, cache, shots)
    print(f"screenshots: {shots}")
    return 0


def run_app(args, cache: Path, shots: Path) -> None:
    data = args.work / f"data-{args.n}-overlap"
    data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = make_manifest(data, args.n)
    print(f"dataset: {args.n:,} PNGs + manifest ready in {time.perf_counter() - started:.1f} s")
    once = precompute(manifest, cache)
    print(f"embed + fit (cached after the first run): {once['prepare_s']:.1f} s")
    print(f"UMAP of {once['n']:,} points (computed once per embedding, then cached): {once['umap_s']:.1f} s")
    env = {**os.environ, "CLIPCLEANER_CACHE": str(cache), "CLIPCLEANER_DATA_ROOTS": str(args.work)}
    proc, url = start_app(env, shots / "bench-streamlit.log")
    try:
        result = measure(url, manifest, args.moves, shots)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    for visit in ("first", "later"):
        print(f"Tune page, {visit} visit: counts after {result[f'counts_{visit}_s']:.2f} s, "
              f"cached map of {once['n']:,} points drawn after {result[f'map_{visit}_s']:.2f} s")
    counts, maps = result["slider_count_s"], result["slider_map_s"]
    print(f"slider move -> updated count: median {statistics.median(counts) * 1000:.0f} ms "
          f"(moves: {', '.join(f'{s * 1000:.0f}' for s in counts)} ms)")
    print(f"slider move -> updated map:   median {statistics.median(maps) * 1000:.0f} ms "
          f"(moves: {', '.join(f'{s * 1000:.0f}' for s in maps)} ms)")
    print(f"box on the map -> {result['selection_text']} after {result['selection_s']:.1f} s")
    state = result.get("map_state") or {}
    print(f"map component ({state.get('renderer')} renderer): {state.get('draws')} full draws, "
          f"{state.get('restyles')} in-place recolours, last render {state.get('lastMs', float('nan')):.0f} ms "
          "inside the iframe")


if __name__ == "__main__":
    sys.exit(main())
