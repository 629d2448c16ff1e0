"""First launch as a new user sees it: ``streamlit run app.py`` on an empty cache, in Chromium.

Starts the app with a fresh cache folder (no embeddings, fits or maps) and, with ``--cold-numba``,
a fresh numba cache as well (what a fresh clone has), opens the Tune page and prints the seconds
from the ``streamlit run`` command to:

* the server answering,
* the Kept / Flagged counts of the demo,
* the first map drawn (the quick PCA layout),
* the refined UMAP map replacing it.

Targets (issue "the app as a daily tool"): counts <= 10 s and a map <= 15 s on the 2-core machine.
Each run prints the load average around it: on a shared machine the times follow the load.

Run: ``python benchmarks/bench_first_launch.py [--runs 2] [--cold-numba]``.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_app_browser import MAP_STATE_JS, ROOT, start_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
QUICK_TEXT = "Quick layout"


def one_launch(cold_numba: bool, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="first-launch-") as folder:
        env = {**os.environ, "CLIPCLEANER_CACHE": str(Path(folder) / "cache")}
        if cold_numba:
            env["NUMBA_CACHE_DIR"] = str(Path(folder) / "numba")
        started = time.perf_counter()
        proc, url = start_app(env, Path(folder) / "app.log")
        times = {"server": time.perf_counter() - started}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(url)
                while time.perf_counter() - started < timeout_s and "final_map" not in times:
                    body = page.inner_text("body")
                    now = time.perf_counter() - started
                    if "counts" not in times and "Flagged" in body and "Kept" in body:
                        times["counts"] = now
                    state = page.evaluate(MAP_STATE_JS)
                    if "first_map" not in times and state and state.get("renders", 0) >= 1:
                        times["first_map"] = now
                    if "first_map" in times and QUICK_TEXT not in body:
                        times["final_map"] = now
                    page.wait_for_timeout(250)
                browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cold-numba", action="store_true", help="also start numba with an empty cache")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    os.chdir(ROOT)
    results = []
    for i in range(1, args.runs + 1):
        load_before = os.getloadavg()[0]
        results.append(one_launch(args.cold_numba, args.timeout))
        print(f"run {i}: " + ", ".join(f"{k} {v:.1f} s" for k, v in results[-1].items())
              + f" (1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after;"
                f" {os.cpu_count()} cores)", flush=True)
    for key, target in (("counts", 10), ("first_map", 15), ("final_map", None)):
        values = [r[key] for r in results if key in r]
        if values:
            goal = f" (target <= {target} s)" if target else ""
            print(f"{key}: median {statistics.median(values):.1f} s over {len(values)} run(s){goal}")
        else:
            print(f"{key}: not reached within {args.timeout:.0f} s")


if __name__ == "__main__":
    main()
