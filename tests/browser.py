"""A real browser on MLflow's UI and optuna-dashboard: serving them, headless Chromium, and the clicks the
docs/browsing.md documents. Used by tests/test_sweep_to_use.py and by docs/screenshots.py, so the screenshots
come from the set-up the test checks."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) when a Chromium and its chromedriver are installed (Debian: chromium, chromium-driver)."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], url: str, log: Path, timeout_s: float = 90) -> Iterator[str]:
    """Run a server until the body is done; yields `url` once it answers."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"{cmd[0]} did not come up: {log.read_text()[-2000:]}") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def mlflow_ui(store_uri: str, log: Path) -> contextlib.AbstractContextManager[str]:
    """`mlflow ui` on a tracking store; yields its base URL."""
    port = free_port()
    cmd = [str(BIN / "mlflow"), "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    return serving(cmd, f"http://127.0.0.1:{port}/health", log)


def optuna_dashboard(storage_url: str, log: Path) -> contextlib.AbstractContextManager[str]:
    """`optuna-dashboard` on a study's storage; yields its API's studies URL."""
    port = free_port()
    cmd = [str(BIN / "optuna-dashboard"), storage_url, "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    return serving(cmd, f"http://127.0.0.1:{port}/api/studies", log)


@contextlib.contextmanager
def chromium(width: int = 1500, height: int = 900) -> Iterator[Any]:
    """Headless Chromium driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    assert paths is not None, "no chromium and chromedriver"
    options = Options()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(paths[1]))
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver: Any, condition: Any, timeout_s: float = 60, what: str = "the page") -> Any:
    """`condition(driver)`'s first truthy value, polled; a readable failure naming `what`."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}; the page shows: {page_text(driver)[:1500]!r}") from None


def visible(driver: Any, xpath: str) -> Any:
    from selenium.webdriver.common.by import By

    return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)


def click(driver: Any, xpath: str, what: str) -> None:
    """A real click on the first visible element matching `xpath` (a script click where something covers it)."""
    from selenium.common.exceptions import ElementClickInterceptedException

    element = wait_for(driver, lambda d: visible(d, xpath), what=what)
    try:
        element.click()
    except ElementClickInterceptedException:
        driver.execute_script("arguments[0].click()", element)


def close_assistant(driver: Any) -> None:
    """Close MLflow 3's assistant side panel, which covers a third of the page."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            driver.execute_script("arguments[0].click()", button)
    time.sleep(0.5)


def show_metric_columns(driver: Any, metrics: list[str], hide: tuple[str, ...] = ()) -> None:
    """The runs table's first documented click: Columns, then tick each metric (and untick `hide`)."""
    from selenium.webdriver.common.keys import Keys

    click(driver, "//button[normalize-space(.)='Columns']", "the Columns button")
    for name in [*metrics, *hide]:
        click(driver, f"//*[@data-testid='column-selector-tree']//*[normalize-space(text())='{name}']",
              f"{name} in the column list")
        time.sleep(0.3)
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    time.sleep(1)


def add_parallel_coordinates(driver: Any, params: list[str], metrics: list[str]) -> None:
    """The second documented click: the chart view, Add chart, Parallel coordinates, its params and metrics."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chart = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input[value=CHART]"), what="the chart view")
    driver.execute_script("arguments[0].closest('label').click()", chart[0])
    click(driver, "//button[contains(normalize-space(.), 'Add chart')]", "Add chart")
    click(driver, "//*[normalize-space(text())='Parallel coordinates']", "Parallel coordinates")
    dialog = wait_for(driver, lambda d: [x for x in d.find_elements(By.CSS_SELECTOR, "[role=dialog]") if x.is_displayed()],
                      what="the chart dialog")[0]
    boxes = dialog.find_elements(By.CSS_SELECTOR, "input[role=combobox]")[-2:]  # params, then metrics
    assert len(boxes) == 2, "the parallel-coordinates dialog has no params and metrics selectors"
    for box, names in zip(boxes, (params, metrics), strict=True):
        for name in names:
            selector = driver.execute_script("return arguments[0].closest('[class*=select-selector]') "
                                             "|| arguments[0].parentElement", box)
            selector.click()
            driver.switch_to.active_element.send_keys(name)
            time.sleep(0.5)
            click(driver, f"//*[@role='option' and normalize-space(.)='{name}'] | "
                          f"//*[contains(@class, 'select-item-option') and normalize-space(.)='{name}']", f"the option {name}")
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    click(driver, "//div[@role='dialog']//button[normalize-space(.)='Add chart']", "the dialog's Add chart")
    time.sleep(2)


def open_chart(driver: Any, title: str, search: str) -> None:
    """Show the chart titled `title` full-screen (the chart search box narrows the grid to charts using `search`)."""
    from selenium.webdriver.common.by import By

    box = wait_for(driver, lambda d: visible(d, "//input[@placeholder='Search metric charts']"), what="the chart search")
    box.send_keys(search)
    heading = wait_for(driver, lambda d: visible(d, f"//*[normalize-space(text())='{title}']"), what=f"the chart {title}")
    card = heading.find_element(By.XPATH, "ancestor::*[@data-testid='experiment-view-compare-runs-card'][1]")
    card.find_elements(By.TAG_NAME, "button")[0].click()  # its full-screen button, beside the menu
    wait_for(driver, lambda d: [x for x in d.find_elements(By.CSS_SELECTOR, "[role=dialog]") if x.is_displayed()],
             what="the full-screen chart")
    time.sleep(2)
