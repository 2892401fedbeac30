"""The running dashboard in a real browser (headless Chromium driven by Selenium): the charts render, the KPIs
show, and a screenshot of each page is saved under the test's output (`DASHBOARD_SCREENSHOTS=<dir>` copies them
there too, e.g. docs/ for the README).

Chromium comes from Debian (`apt-get install chromium chromium-driver`, which .ci/run does when missing). The
network is closed here: the flags below keep it from trying to reach Google's services, which would hang it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_stack import processes
from local_stack.analytics import DASHBOARD_APP, dashboard_command, dashboard_url
from tests.analytics.conftest import Builds

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1700",
]
CHARTS = '[data-testid="stVegaLiteChart"]'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "no chromium/chromedriver: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.set_page_load_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def dashboard(builds: Builds, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "DASHBOARD_DATABASE_URL": dashboard_url(builds.shop.stack.ports, builds.shop.dbname)}
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(dashboard_command(port), env=env, cwd=DASHBOARD_APP.parent, stdout=log, stderr=log)
    try:
        processes.wait_for_port(port, 60, "the dashboard", tmp_path / "streamlit.log", proc.pid)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _wait(driver: Any, seconds: float) -> Any:
    """WebDriverWait that looks again when Streamlit redraws an element between finding and reading it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def _rendered_charts(driver: Any, at_least: int) -> Any:
    from selenium.webdriver.common.by import By

    def drawn(d: Any) -> bool:  # a Vega chart has drawn when its canvas (or SVG) exists and has a size
        marks = d.find_elements(By.CSS_SELECTOR, f"{CHARTS} canvas, {CHARTS} svg")
        return len([m for m in marks if m.size["width"] > 100 and m.size["height"] > 100]) >= at_least

    _wait(driver, 90).until(drawn)
    return driver


def _save(driver: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000  # a page with charts, not a blank one
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["DASHBOARD_SCREENSHOTS"]) / name)
    print(f"\nscreenshot: {shot}")
    return shot


def test_the_dashboard_renders_its_charts_in_chromium(
    builds: Builds, dashboard: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(dashboard)
    _rendered_charts(browser, 3)
    revenue = builds.shop.scalar("select sum(total_price) from analytics.orders")

    def metrics(d: Any) -> list[str]:
        return [m.text for m in d.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]')]

    expected = f"{revenue:,.2f}"
    _wait(browser, 30).until(lambda d: expected in metrics(d), f"no metric shows the revenue {expected}")
    _save(browser, tmp_path, "dashboard-sales.png")

    link = _wait(browser, 30).until(
        lambda d: next(
            (
                a
                for a in d.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
                if "quality" in (a.get_attribute("href") or "")
            ),
            None,
        )
    )
    link.click()
    _wait(browser, 60).until(lambda d: "Data quality" in d.find_element(By.TAG_NAME, "h1").text)
    _rendered_charts(browser, 1)
    _save(browser, tmp_path, "dashboard-quality.png")
