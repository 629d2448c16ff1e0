"""How fast the Tune page feels at 50,000 samples, measured in a real headless Chromium.

Builds a synthetic 50k-image manifest (16x16 PNGs, one seeded pattern per class, 30% symmetric
label noise; reused on later runs), embeds it with the weight-free ``pixels`` encoder, fits the
scores and computes the UMAP map once (all cached), then starts ``streamlit run app.py`` and prints:

* the one-off costs: embedding + fit, and the cold UMAP;
* time to first map on the Tune page when the map is cached (first and a later visit);
* slider-move-to-updated-count latency and slider-move-to-updated-map latency (median of N moves;
  the map's legend counts inside the map component's iframe).

Run: ``python benchmarks/bench_app_browser.py [--n 50000] [--moves 5] [--work DIR]``.
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


def start_app(env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
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
            page.wait_for_function(FLAGGED_JS, timeout=300_000)
            out[f"counts_{visit}_s"] = time.perf_counter() - started
            page.wait_for_function(LEGEND_JS, timeout=300_000)
            out[f"map_{visit}_s"] = time.perf_counter() - started
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
        browser.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "cache" / "bench-app-browser")
    args = parser.parse_args(argv)
    data, cache, shots = args.work / f"data-{args.n}-overlap", args.work / "cache", ROOT / "test-artifacts"
    for folder in (data, cache, shots):
        folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = make_manifest(data, args.n)
    print(f"dataset: {args.n:,} PNGs + manifest ready in {time.perf_counter() - started:.1f} s")
    os.environ["CLIPCLEANER_CACHE"] = str(cache)
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
    state = result.get("map_state") or {}
    print(f"map component: {state.get('draws')} full draws, {state.get('restyles')} in-place recolours, "
          f"last render {state.get('lastMs', float('nan')):.0f} ms inside the iframe")
    print(f"screenshots: {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
