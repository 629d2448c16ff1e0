"""End to end in a real headless Chromium: tune, relabel, reload, export.

Starts ``streamlit run app.py`` on a free port with its own cache folder, then drives the app the
way a user would. Screenshots are kept under ``test-artifacts/e2e/`` (git-ignored).
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not become healthy at {url} in {timeout_s} s")


def start_app(cache: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` headless on a free port, in its own process group."""
    port = free_port()
    env = {**os.environ, "CLIPCLEANER_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
    except Exception:
        stop_app(proc)
        raise
    return proc, url


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def app_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-cache")


@pytest.fixture(scope="module")
def app_url(app_cache):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc, url = start_app(app_cache, ARTIFACTS / "streamlit.log")
    yield url
    stop_app(proc)


def write_pets(root: Path, per_class: int = 20) -> Path:
    """A small ImageFolder (two classes of flat-coloured 16 px images, some mislabelled)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = np.array([200, 40, 40] if (k + (i % 7 == 0)) % 2 == 0 else [40, 40, 200])
            pixels = np.clip(colour + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


MAP_STATE_JS = """() => { const f = document.querySelector('iframe[title*="umap_map"]');
  return f && f.contentWindow.umapMap ? JSON.parse(JSON.stringify(f.contentWindow.umapMap)) : null; }"""


def metric_value(page, label: str) -> str:
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return card.locator('[data-testid="stMetricValue"]').inner_text().strip()


def open_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()


def first_card_relabel(page, timeout_s: float = 60):
    """(sample index, element) of the first card's enabled "Relabel → suggestion" button.

    Streamlit tags each element with a ``st-key-<key>`` class; card buttons are keyed by index.
    The page draws its buttons row before the cards, so this waits for the cards to arrive.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for element in page.locator('[class*="st-key-inspect_relabel_"]').all():
            key = next(c for c in element.get_attribute("class").split() if c.startswith("st-key-"))
            suffix = key.rsplit("_", 1)[1]
            if suffix.isdigit() and element.locator("button").is_enabled():
                return int(suffix), element
        page.wait_for_timeout(250)
    raise AssertionError("no card with an enabled relabel button")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))  # the app scrolls inside its own container


def test_tune_relabel_reload_export(app_url, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    page.goto(app_url)
    flagged = page.locator('[data-testid="stMetric"]').filter(has_text="Flagged").first
    expect(flagged).to_be_visible(timeout=180_000)  # first visit embeds and fits the demo
    before = metric_value(page, "Flagged")

    slider = page.locator('[data-testid="stSlider"]').filter(has_text="θ_cons").locator('input[type="range"]')
    slider.focus()
    for _ in range(15):
        slider.press("ArrowRight")
    expect(flagged.locator('[data-testid="stMetricValue"]')).not_to_have_text(before, timeout=30_000)
    after = metric_value(page, "Flagged")
    assert int(after.replace(",", "")) > int(before.replace(",", "")), (before, after)
    shot(page, "1-tune-after-slider")

    open_page(page, "Inspect")
    expect(page.locator(".st-key-inspect_relabel_page")).to_be_visible(timeout=60_000)
    index, relabel = first_card_relabel(page)
    target = relabel.inner_text().split("→", 1)[1].strip()
    relabel.locator("button").click()
    reviewed = page.get_by_text("· 1 reviewed")
    expect(reviewed).to_be_visible(timeout=30_000)
    shot(page, "2-inspect-after-relabel")

    page.reload()
    expect(page.get_by_text("· 1 reviewed")).to_be_visible(timeout=60_000)  # still saved after a reload
    shot(page, "3-inspect-after-reload")

    open_page(page, "Export")
    download_button = page.locator('[data-testid="stDownloadButton"] button').filter(has_text="CSV").first
    expect(download_button).to_be_visible(timeout=60_000)
    with page.expect_download(timeout=60_000) as download_info:
        download_button.click()
    csv_path = tmp_path / "labels.csv"
    download_info.value.save_as(csv_path)
    table = pd.read_csv(csv_path).set_index("index")
    assert str(table.loc[index, "final_label"]) == target, table.loc[index].to_dict()
    assert table.loc[index, "review_decision"] == "relabel"
    shot(page, "4-export")

    open_page(page, "Tune")  # by now the map has had time to compute in the background
    frame = page.locator('iframe[title*="umap_map"]')
    expect(frame).to_be_visible(timeout=240_000)
    the_map = frame.content_frame
    expect(the_map.locator("#map canvas").first).to_be_attached(timeout=60_000)
    expect(the_map.locator(".legendtext").first).to_contain_text("kept")
    page.wait_for_function(f"() => ({MAP_STATE_JS})()?.renders > 0", timeout=60_000)
    assert page.evaluate(f"() => ({MAP_STATE_JS})().points") == 1797
    frame.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    shot(page, "5-tune-map")

    before, flagged_before = page.evaluate(MAP_STATE_JS), metric_value(page, "Flagged")
    # A threshold move recolours the mounted map in place, without a redraw. The move goes to the
    # slider's minimum: on the demo the flagged count is flat over theta_cons 0.71-0.81, so a short
    # move can leave the count as it was. Pressing again stays as a guard against a lost key.
    for _ in range(3):
        slider.focus()
        slider.press("Home")
        try:
            expect(flagged.locator('[data-testid="stMetricValue"]')).not_to_have_text(flagged_before, timeout=10_000)
            break
        except AssertionError:
            continue
    try:
        page.wait_for_function(f"(old) => JSON.stringify(({MAP_STATE_JS})()?.counts) !== JSON.stringify(old)",
                               arg=before["counts"], timeout=30_000)
    except Exception:
        shot(page, "5b-tune-map-not-updated")
        raise AssertionError((before, metric_value(page, "Flagged"), page.evaluate(MAP_STATE_JS)))
    after = page.evaluate(MAP_STATE_JS)
    assert after["draws"] == before["draws"] and after["restyles"] > before["restyles"], (before, after)

    box = frame.bounding_box()  # a box drawn over the whole map selects points and opens their images
    the_map.get_by_role("button", name="Box").click()
    page.mouse.move(box["x"] + 15, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] - 15, box["y"] + box["height"] - 15, steps=5)
    page.mouse.up()
    expect(page.get_by_text("samples selected on the map")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1000)
    shot(page, "6-tune-map-selection")
    selected = int(page.get_by_text("samples selected on the map").inner_text().split()[0].replace(",", ""))

    page.locator(".st-key-tune_send_to_inspect button").click()  # review the selection in Inspect
    expect(page.get_by_text(f"{selected:,} samples match")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("combobox", name="Show")).to_have_value(f"selected on the map ({selected:,})",
                                                                    timeout=30_000)
    shot(page, "7-inspect-map-selection")
    page.close()


def url_params(page) -> dict:
    from urllib.parse import parse_qs, urlparse

    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def wait_url(page, name: str, value: str | None = None, timeout_s: float = 30) -> dict:
    """Wait until the address bar has parameter ``name`` (equal to ``value`` when given)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        params = url_params(page)
        if name in params and (value is None or params[name] == value):
            return params
        page.wait_for_timeout(200)
    raise AssertionError(f"{name}={value} never reached the address bar: {page.url}")


def test_state_survives_a_reload_and_travels_in_a_link(app_url, app_cache, browser):
    """Load a folder, move a threshold, page through Inspect; a reload and a link opened in a fresh
    browser context show the same dataset, thresholds and page. Then export twice."""
    from playwright.sync_api import expect

    pets = write_pets(app_cache / "uploads" / "pets")  # the uploads folder is always a data root
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{app_url}/dataset")
    page.get_by_text("ImageFolder path", exact=True).click()
    page.locator(".st-key-path_imagefolder input").fill(str(pets))
    page.locator(".st-key-load_imagefolder button").click()
    expect(page.get_by_text("Loaded pets: 40 images in 2 classes.")).to_be_visible(timeout=60_000)
    assert wait_url(page, "data")["data"] == str(pets.resolve())
    expect(page).to_have_title("Dataset · pets · CLIPCleaner")

    open_page(page, "Tune")
    flagged = page.locator('[data-testid="stMetric"]').filter(has_text="Flagged").first
    expect(flagged).to_be_visible(timeout=120_000)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="θ_cons").locator('input[type="range"]')
    slider.focus()
    for step in range(1, 6):  # one key press at a time: the address bar follows each value
        slider.press("ArrowLeft")
        cons = wait_url(page, "cons", f"{round(0.8 - 0.01 * step, 2):g}", timeout_s=60)["cons"]
    assert cons == "0.75"
    for _ in range(5):  # five quick presses: the address must end at the last one, not an earlier
        slider.press("ArrowLeft")
    wait_url(page, "cons", "0.7", timeout_s=60)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_be_hidden(timeout=60_000)
    cons = url_params(page)["cons"]
    assert cons == "0.7" and metric_value(page, "Kept")

    # Right after quick presses a page click was once lost in a fresh clone's run (the slider's
    # last debounced rerun went out after it and kept the Tune page); a user clicks again, so does
    # this test, once. Not diagnosed further.
    show = page.get_by_role("combobox", name="Show")
    for attempt in range(2):
        open_page(page, "Inspect")
        try:
            expect(show).to_be_visible(timeout=30_000 * (attempt + 1))
            break
        except AssertionError:
            if attempt:
                raise
    show.click()
    page.get_by_role("option", name="all samples").click()
    expect(page.get_by_text("40 samples match · page 1 of 2")).to_be_visible(timeout=30_000)
    page.locator(".st-key-inspect_page button").last.click()  # the number input's "+"
    expect(page.get_by_text("40 samples match · page 2 of 2")).to_be_visible(timeout=30_000)
    link = wait_url(page, "page", "2")
    assert link["data"] == str(pets.resolve()) and link["show"] == "all samples" and link["cons"] == cons
    shot(page, "8-inspect-page-2")

    page.reload()
    expect(page.get_by_text("40 samples match · page 2 of 2")).to_be_visible(timeout=60_000)
    expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("pets")
    expect(page.locator('[data-testid="stSidebar"]')).to_contain_text(f"θ_cons {float(cons):.2f}")
    expect(page).to_have_title("Inspect · pets · CLIPCleaner")
    shot(page, "9-inspect-after-reload")
    address = page.url

    context = browser.new_context(viewport={"width": 1500, "height": 1100})  # a colleague's browser
    other = context.new_page()
    other.goto(address)
    expect(other.get_by_text("40 samples match · page 2 of 2")).to_be_visible(timeout=60_000)
    expect(other.get_by_role("combobox", name="Show")).to_have_value("all samples")
    expect(other.locator('[data-testid="stSidebar"]')).to_contain_text("pets")
    shot(other, "10-link-in-a-fresh-browser")
    context.close()

    open_page(page, "Export")  # two formats keep two files; writing one again asks first
    write = page.locator(".st-key-export_write button")
    expect(write).to_be_visible(timeout=60_000)
    write.click()
    expect(page.get_by_text("pets-csv.csv", exact=False).last).to_be_visible(timeout=30_000)
    expect(page.locator('[data-testid="stAlertContentSuccess"]')).to_contain_text("pets-csv.csv", timeout=30_000)
    page.get_by_text("Recipe", exact=True).click()
    expect(page.locator(".st-key-export_name_recipe input")).to_have_value("pets-recipe.json", timeout=30_000)
    write.click()
    expect(page.locator('[data-testid="stAlertContentSuccess"]')).to_contain_text("pets-recipe.json", timeout=30_000)
    exports = app_cache / "exports"
    assert (exports / "pets-csv.csv").is_file() and (exports / "pets-recipe.json").is_file()
    before = (exports / "pets-recipe.json").stat().st_mtime_ns
    write.click()
    expect(page.get_by_text("already exists: an earlier export from this app. Replace it?")).to_be_visible(timeout=30_000)
    shot(page, "11-export-asks-before-replacing")
    assert (exports / "pets-recipe.json").stat().st_mtime_ns == before
    page.locator(".st-key-export_confirm_replace button").click()
    expect(page.locator('[data-testid="stAlertContentSuccess"]')).to_contain_text("pets-recipe.json", timeout=30_000)
    assert (exports / "pets-recipe.json").stat().st_mtime_ns != before
    page.close()
