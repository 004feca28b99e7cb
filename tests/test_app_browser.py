"""The plugin in the real FiftyOne App, driven by headless Chromium.

The main job (examples/select_coreset.py, as the README runs it, on a folder of 300 real
images) makes the dataset; a FiftyOne App server then runs on localhost over the test database.
Chromium (Debian's, via Selenium; `scripts/setup_browser.sh` installs it) checks from the page
itself that: the operators are listed in the operator browser; a form's validation message
shows; running `select coreset` from the App changes the dataset (checked in the database); the
ELFS panel draws its charts (non-blank pixels inside the chart areas) with its run-key label
clear of the Refresh button; the Embeddings panel lists the main job's plot and draws its
points (software WebGL); coloured by coreset region, the points are drawn in the ELFS panel's
region colours (the rendered pixels, in the plot and in the panel's histogram).
Screenshots go to tests/screenshots/ (git-ignored); docs/images has copies for the README.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(REPO, "tests", "screenshots")
MAIN_JOB = os.path.join(REPO, "examples", "select_coreset.py")
CHROMIUM = os.environ.get("ELFS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("ELFS_CHROMEDRIVER") or shutil.which("chromedriver")
OPERATOR_LABELS = (
    "ELFS: select a coreset (whole pipeline)",
    "ELFS: compute embeddings",
    "ELFS: compute pseudo-labels",
    "ELFS: compute difficulty",
    "ELFS: embedding plot",
    "ELFS: contrastive similarity scores",
    "ELFS: select coreset",
    "ELFS: export coreset for annotation",
    "ELFS: send to Label Studio",
    "ELFS: load labels from Label Studio",
    "ELFS: select the next budget",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout: float, what: str, interval: float = 0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _coloured_pixels(png: bytes, box: tuple[int, int, int, int] | None = None) -> tuple[int, int]:
    """(clearly coloured pixels, all pixels) of a screenshot: chart bars and points are
    coloured, while the dark background, text and grid lines are grey."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if box is not None:
        image = image.crop(box)
    rgb = np.asarray(image, dtype=np.int16)
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    return int((chroma > 60).sum()), int(chroma.size)


def _colour_counts(
    png: bytes, colours: dict[str, str], box: tuple[int, int, int, int] | None = None
) -> dict[str, int]:
    """How many pixels of a screenshot are each of `colours` (hex), drawn over the background.

    Points and bars may be drawn with some transparency over the (most frequent) background
    colour: each clearly non-background pixel is attributed to the colour c for which some
    blend ``bg + a * (c - bg)``, 0 < a <= 1, comes closest, if that blend is within 12 (RGB
    distance) of the pixel.
    """
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if box is not None:
        image = image.crop(box)
    rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3)
    values, counts = np.unique(rgb.astype(np.int64), axis=0, return_counts=True)
    bg = values[np.argmax(counts)].astype(np.float64)
    d = rgb - bg
    fg = d[np.linalg.norm(d, axis=1) > 30]
    names = list(colours)
    residuals = []
    for name in names:
        c = np.array([int(colours[name][i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
        v = c - bg
        a = np.clip(fg @ v / max(v @ v, 1e-9), 0.0, 1.0)
        residuals.append(np.linalg.norm(fg - a[:, None] * v[None, :], axis=1))
    residuals = np.stack(residuals, axis=1)
    best = np.argmin(residuals, axis=1)
    close = residuals[np.arange(len(fg)), best] <= 12
    return {name: int(((best == i) & close).sum()) for i, name in enumerate(names)}


#: The colours FiftyOne picked for the three regions before the colour scheme (from its pool).
APP_DEFAULT_REGION_COLOURS = {
    "app_green": "#009900",
    "app_dark_green": "#003300",
    "app_teal": "#009999",
}


def _check_region_colours(
    png: bytes, what: str, regions, box=None, minimum: int = 20
) -> dict[str, int]:
    """The coreset's regions (those it has: a window leaves the easy end, a CCS draw or typical
    selection leaves samples across the range) are drawn in the ELFS panel's colours, not
    FiftyOne's defaults."""
    from fiftyone_elfs.app_colors import REGION_COLORS

    counts = _colour_counts(png, {**REGION_COLORS, **APP_DEFAULT_REGION_COLOURS}, box)
    ours = sum(counts[r] for r in REGION_COLORS)
    theirs = sum(counts[c] for c in APP_DEFAULT_REGION_COLOURS)
    print(f"{what}: {counts}")
    for region in regions:
        assert counts[region] >= minimum, f"{what}: too few {region} pixels: {counts}"
    assert theirs < 0.1 * ours, f"{what}: FiftyOne's default colours are drawn: {counts}"
    return counts


@pytest.fixture(scope="module")
def app_dataset(image_dir, tmp_path_factory):
    """The dataset the main job makes from a folder of 300 real images (20% budget, its
    defaults otherwise: TEMI pseudo-labels, MLP proxy, UMAP plot, export)."""
    import fiftyone as fo

    work = tmp_path_factory.mktemp("main_job")
    cmd = [sys.executable, MAIN_JOB, "--images-dir", image_dir, "--budget-fraction", "0.2"]
    done = subprocess.run(
        [*cmd, "--workdir", str(work)], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    name = re.search(r"Dataset '([^']+)'", done.stdout).group(1)
    dataset = fo.load_dataset(name)
    yield dataset
    dataset.delete()


@pytest.fixture(scope="module")
def app_url(app_dataset):
    """A real App server on a free localhost port, over the same database as the tests."""
    port = _free_port()
    log = open(os.path.join(os.path.dirname(os.environ["FIFTYONE_PLUGINS_DIR"]), "app.log"), "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "fiftyone.server.main", "--port", str(port)]
        + ["--address", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),  # FIFTYONE_DATABASE_URI and FIFTYONE_PLUGINS_DIR of conftest
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready():
        if server.poll() is not None:
            raise RuntimeError(f"the App server exited: see {log.name}")
        try:
            with urllib.request.urlopen(url + "/fiftyone", timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    try:
        _wait(ready, 120, "the App server")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with software WebGL (SwiftShader), never downloading anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMEDRIVER, "chromedriver is missing: run scripts/setup_browser.sh"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-extensions",
        "--window-size=1600,1000",
        "--use-gl=angle",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
    )
    # The App's first-visit "Explore Enterprise" popover has an invisible backdrop that swallows
    # clicks; the App skips it (and analytics) under automation and once it has been seen.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.IS_PLAYWRIGHT = true;"
            "try { localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true'); } "
            "catch (e) {}"
        },
    )
    os.makedirs(SHOTS, exist_ok=True)
    yield driver
    driver.quit()


def test_the_plugin_works_in_the_real_app(app_dataset, app_url, browser):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    n = len(app_dataset)
    # The App re-renders constantly: every wait re-finds its elements.
    wait = WebDriverWait(
        d, 90, poll_frequency=0.2,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )  # fmt: skip

    def css(selector):
        return d.find_element(By.CSS_SELECTOR, selector)

    def shot(name):
        d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    # 1. The dataset's grid.
    d.get(f"{app_url}/datasets/{app_dataset.name}")
    wait.until(lambda _: f"{n} samples" in css("[data-cy=entry-counts]").text)
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "[data-cy=looker]")) >= 20)
    shot("1_grid")

    # 2. Every ELFS operator is in the operator browser.
    ActionChains(d).send_keys("`").perform()
    search = wait.until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-cy=operators-browser-search]"))
    )
    search.send_keys("ELFS")
    listing = "[data-cy=operators-browser]"
    wait.until(lambda _: all(label in css(listing).text for label in OPERATOR_LABELS))
    shot("2_operator_browser")

    # 3. The select-coreset form: its validation message, then a run that changes the dataset.
    assert len(app_dataset.match_tags("elfs_coreset")) == round(0.2 * n)
    search.send_keys(": select coreset")
    item = "//*[@data-cy='operators-browser']//div[normalize-space(text())='ELFS: select coreset']"
    wait.until(EC.element_to_be_clickable((By.XPATH, item))).click()
    modal = "[data-cy=operators-prompt-modal]"
    number = (By.CSS_SELECTOR, f"{modal} input[type=number]")
    fraction = wait.until(EC.element_to_be_clickable(number))
    assert fraction.get_attribute("value") == "0.1"  # the form's default budget
    fraction.send_keys(Keys.CONTROL, "a")
    fraction.send_keys("1.5")
    wait.until(lambda _: "Use a fraction in (0, 1]" in css(modal).text)
    execute = "//*[@data-cy='operators-prompt-modal']//button[normalize-space()='Execute']"
    wait.until(lambda _: not d.find_element(By.XPATH, execute).is_enabled())  # run blocked
    shot("3_form_validation")
    fraction.send_keys(Keys.CONTROL, "a")
    fraction.send_keys("0.1")
    wait.until(lambda _: "Use a fraction in (0, 1]" not in css(modal).text)
    shot("3_form")
    wait.until(EC.element_to_be_clickable((By.XPATH, execute))).click()

    def coreset_recorded():  # the run is recorded last, after the tag and the regions
        app_dataset.reload()
        if "elfs_coreset" not in app_dataset.list_runs():
            return False
        try:
            results = app_dataset.load_run_results("elfs_coreset", cache=False)
        except AttributeError:  # read while FiftyOne swaps the results file: not there yet
            return False
        # None between registering the run and saving its results: not recorded yet
        return results is not None and results.n_selected == round(0.1 * n)

    _wait(coreset_recorded, 60, "the App's select_coreset run to reach the database")
    assert len(app_dataset.match_tags("elfs_coreset")) == round(0.1 * n)
    assert app_dataset.count_values("elfs_coreset_region")["coreset"] == round(0.1 * n)
    # The run's progress bar ends on the operator's final label; "Done" closes it.
    wait.until(lambda _: f"selected {round(0.1 * n)} samples" in css("body").text)
    shot("3_after_run")
    done = "//button[normalize-space()='Done']"
    wait.until(EC.element_to_be_clickable((By.XPATH, done))).click()
    wait.until(lambda _: not d.find_elements(By.XPATH, done))

    # 4. The ELFS panel draws its two charts with the new selection.
    css("[data-cy=new-panel-btn]").click()
    wait.until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-cy=new-panel-option-elfs_panel]"))
    ).click()
    panel = "[data-cy=panel-content-elfs_panel]"
    wait.until(lambda _: f"{round(0.1 * n)} of {n} samples selected" in css(panel).text)
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, f"{panel} .js-plotly-plot")) == 2)
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, f"{panel} .bars path")) > 10)
    time.sleep(1.0)  # let Plotly finish its transition before reading pixels
    plots = d.find_elements(By.CSS_SELECTOR, f"{panel} .js-plotly-plot")
    for plot in plots:  # a user scrolls to a chart below the fold; so does the check
        d.execute_script("arguments[0].scrollIntoView({block: 'center'});", plot)
        time.sleep(0.3)
        coloured, total = _coloured_pixels(plot.screenshot_as_png)
        assert coloured > 0.01 * total, f"a chart of the ELFS panel looks blank ({coloured} px)"
    shot("4_elfs_panel")
    # The panel's histogram draws the regions in the panel's colours (the same as the plot's).
    histogram = d.find_element(By.CSS_SELECTOR, f"{panel} .js-plotly-plot")
    regions = set(app_dataset.count_values("elfs_coreset_region"))
    rule = app_dataset.load_run_results("elfs_coreset").mode  # typical here: weak trust
    expected = {"window": 3, "ccs": 3, "typical": 2}[rule]  # typical makes no hard-end cut
    assert "coreset" in regions and len(regions) == expected, (rule, regions)
    panel_counts = _check_region_colours(
        histogram.screenshot_as_png, "ELFS panel histogram", regions
    )
    in_panel = "//*[@data-cy='panel-content-elfs_panel']"
    label = d.find_element(By.XPATH, f"{in_panel}//*[text()='Run key']")
    refresh = d.find_element(By.XPATH, f"{in_panel}//button[normalize-space()='Refresh']")
    a, b = label.rect, refresh.rect
    assert (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    ), f"the 'Run key' label {a} overlaps the Refresh button {b}"
    rect = label.rect  # a text-only stretch of the same panel: the control for the pixel check
    blank, _ = _coloured_pixels(
        d.get_screenshot_as_png(),
        (int(rect["x"]), int(rect["y"]), int(rect["x"] + rect["width"]), int(rect["y"] + 18)),
    )
    assert blank == 0
    text = css(panel).text
    assert "Difficulty (aum)" in text and "Pseudo-label clusters" in text
    heading = f"{in_panel}//*[contains(text(), 'Parameters')]"
    d.execute_script("arguments[0].scrollIntoView();", d.find_element(By.XPATH, heading))
    wait.until(lambda _: "budget_fraction=0.1" in css(panel).text)
    shot("4_elfs_panel_parameters")

    # 5. The Embeddings panel lists the run's plot and draws its points.
    css("[data-cy=new-panel-btn]").click()
    wait.until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, "[data-cy=new-panel-option-Embeddings]"))
    ).click()
    wait.until(lambda _: "elfs_umap" in css("[data-cy=embeddings-runs-page]").text)
    shot("5_embeddings_runs")
    card = (
        "//*[@data-cy='embeddings-runs-page']//div[contains(@class,'emb-run-card')]"
        "[.//*[normalize-space(text())='elfs_umap']]"
    )
    wait.until(lambda _: d.find_element(By.XPATH, card).click() or True)
    canvas = "[data-cy=panel-content-Embeddings] .emb-plot canvas[data-engine^='three']"
    wait.until(lambda _: f"{n} points" in css("[data-cy=panel-content-Embeddings]").text)

    def points_drawn():
        # the point count shows before the plot's canvas is attached (and the canvas is
        # replaced when the points are recoloured): not there yet means keep waiting
        try:
            coloured, _ = _coloured_pixels(css(canvas).screenshot_as_png)
        except (NoSuchElementException, StaleElementReferenceException):
            return None
        return coloured if coloured > 200 else None

    _wait(points_drawn, 60, "the embedding points to be drawn")
    shot("5_embeddings_plot")

    # 6. Colour the points by where each sample fell: dropped hard, coreset, dropped easy.
    css("[data-cy=panel-content-Embeddings] button[aria-label='Color by']").click()
    listbox = "[data-cy=panel-content-Embeddings] [role=listbox]"
    for field in ("elfs_pseudo_label", "elfs_aum", "elfs_forgetting", "elfs_coreset_region"):
        wait.until(lambda _, f=field: f in css(listbox).text)
    option = "//*[@role='listbox']//*[normalize-space(text())='elfs_coreset_region']"
    wait.until(EC.element_to_be_clickable((By.XPATH, option))).click()
    trigger = "[data-cy=panel-content-Embeddings] button[aria-label='Color by']"
    wait.until(lambda _: "elfs_coreset_region" in css(trigger).text)
    _wait(points_drawn, 60, "the recoloured points")
    time.sleep(1.0)
    shot("6_embeddings_by_region")
    plot_counts = _check_region_colours(
        css(canvas).screenshot_as_png, "Embeddings plot", regions, None, 5
    )
    # The same colours: the coreset (10%) is the region with the fewest points.
    assert plot_counts["coreset"] < min(plot_counts[r] for r in regions - {"coreset"})
    assert panel_counts["coreset"] > 0
