"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright's Python
package, against a real server with the quick models and a real load-test report.

A screenshot of the page is saved to ``runs/test-screenshots/page.png`` (not committed) so a
person can look at what the test saw.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from loadtests.report import build_report
from modelrepo.layout import RUNTIME_NAMES
from tests.conftest import QuickModels
from tests.helpers import REPO, Server, png_bytes, run_server
from tests.test_loadtests_report import write_recorded_set
from training.data import Mnist, to_model_input

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As root on a machine with no network but the package registries: no sandbox, no background
# connections (refused here, many at a time), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = REPO / "runs" / "test-screenshots"
MODELS = [f"{v}@{r}" for v in ("depthwise", "original") for r in RUNTIME_NAMES]
RUN_NAME = "loadtest-20261122-000000"


@pytest.fixture(scope="module")
def ui_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server whose runs folder holds one real report (built from recorded samples)."""
    runs = tmp_path_factory.mktemp("runs")
    write_recorded_set(runs / RUN_NAME, np.random.default_rng(3))
    build_report(runs / RUN_NAME)
    (runs / "outside").symlink_to(tmp_path_factory.mktemp("elsewhere"))
    log = tmp_path_factory.mktemp("ui") / "server.log"
    with run_server(models_dir, log, "--runs-dir", str(runs)) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from Debian's package (no downloaded browser builds)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, ui_server: Server) -> Iterator[Page]:
    """The page, opened, with every model's card built."""
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    opened = context.new_page()
    opened.goto(f"{ui_server.url}/")
    opened.wait_for_function(f"document.querySelectorAll('.card').length === {len(MODELS)}")
    yield opened
    context.close()


def answers(page: Page) -> dict[str, tuple[str, str]]:
    """Per model card: the predicted digit and the round-trip field."""
    return {
        card.get_attribute("data-model") or "": (
            card.locator(".digit").inner_text(),
            card.locator(".rtt-ms").inner_text(),
        )
        for card in page.locator(".card").all()
    }


def wait_for_answers(page: Page, count: int = 1) -> None:
    """Until every card shows a digit and its running median covers ``count`` answers."""
    page.wait_for_function(
        f"""[...document.querySelectorAll('.card')].every(c =>
            /^\\d$/.test(c.querySelector('.digit').textContent) &&
            c.querySelector('.median-ms').textContent.includes('({count})'))""",
        timeout=30_000,
    )


def test_drawing_a_one_gets_every_model_answering(page: Page) -> None:
    box = page.locator("#pad").bounding_box()
    assert box is not None
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 50)
    page.mouse.down()
    for step in range(1, 19):
        page.mouse.move(x + step * 0.5, box["y"] + 50 + step * 10)
    page.mouse.up()
    wait_for_answers(page)
    got = answers(page)
    assert sorted(got) == sorted(MODELS)
    for digit, rtt in got.values():
        assert re.fullmatch(r"\d", digit) and re.fullmatch(r"\d+\.\d ms", rtt)
    assert page.locator(".card .model-ms").first.inner_text().endswith(" ms")
    # The 28x28 the models saw is drawn: some pixel of it is bright.
    assert page.evaluate(
        "Array.from(document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 112, 112).data).some((v, i) => i % 4 === 0 && v > 200)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "page.png"), full_page=True)


def test_uploading_a_digit_gets_the_right_answer(
    page: Page, trained: QuickModels, mnist: Mnist, tmp_path: Path
) -> None:
    pixels = to_model_input(mnist.x_test[:64])
    right = [
        np.asarray(r.model(pixels, training=False)).argmax(axis=1) == mnist.y_test[:64]
        for r in trained.results.values()
    ]
    index = int(np.flatnonzero(np.logical_and(*right))[0])  # a digit both models get right
    picture = tmp_path / "digit.png"
    picture.write_bytes(png_bytes(255 - mnist.x_test[index]))  # dark ink on white paper
    page.set_input_files("#file", str(picture))
    wait_for_answers(page)
    digits = {digit for digit, _ in answers(page).values()}
    assert digits == {str(int(mnist.y_test[index]))}


def test_quick_compare_draws_every_models_distribution(page: Page) -> None:
    page.fill("#count", "10")
    page.click("#compare")
    page.wait_for_selector("#strip svg", timeout=60_000)
    labels = page.locator("#strip svg text").all_text_contents()
    assert all(model in labels for model in MODELS)
    assert "not a load test" in page.locator("#strip").inner_text()


def test_reports_list_opens_a_report(page: Page) -> None:
    page.wait_for_selector("#reports a")
    links = page.locator("#reports a")
    assert links.all_inner_texts() == [RUN_NAME]  # the symlink out of the folder is not listed
    links.first.click()
    page.wait_for_load_state()
    assert page.title().startswith("mnist-serve load test")
    assert "The answer" in page.locator("h2").first.inner_text()


@pytest.mark.parametrize(
    "path",
    [
        "/reports/outside/report.html",
        "/reports/..%2F..%2Fetc/report.html",
        "/reports/nope/report.html",
        f"/reports/{RUN_NAME}/results.json",
    ],
)
def test_only_listed_reports_are_served(ui_server: Server, path: str) -> None:
    assert httpx.get(f"{ui_server.url}{path}").status_code == 404


def test_page_is_served_whole_from_the_service(ui_server: Server) -> None:
    page = httpx.get(f"{ui_server.url}/ui")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http" not in re.sub(r'href="/docs"', "", page.text)  # nothing from elsewhere
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(f"{ui_server.url}{asset}").status_code == 200
