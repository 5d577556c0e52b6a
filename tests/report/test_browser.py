"""The report in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) driven by selenium.

Skipped, with the reason, only where Chromium is absent; under CI (`CI` set) a missing Chromium is a failure, because
`.ci/run` installs it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quadselect.config import RunConfig
from quadselect.run import StageResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        reason = "Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the browser test")
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the `test` extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_report_renders_in_chromium(
    browser: Any, compared_run: tuple[RunConfig, dict[str, StageResult]], tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    summary = compared_run[1]["report"].summary
    browser.get(Path(summary["path"]).as_uri())
    assert browser.title.startswith("quadselect report")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    with pytest.raises(NoAlertPresentException):  # the pool's <script> stayed text
        browser.switch_to.alert.text  # noqa: B018

    assert set(summary["figures"]) == {"timings", "map", "trajectory", "scores", "composition", "comparison"}
    for name in summary["figures"]:
        image = browser.find_element(By.CSS_SELECTOR, f'figure[data-figure="{name}"] img')
        width = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
        assert width > 300, name  # decoded, not a broken-image icon
        assert image.is_displayed()
    for table in summary["tables"]:
        rows = browser.find_elements(By.CSS_SELECTOR, f'table[data-table="{table}"] tbody tr')
        assert rows, table
    body = browser.find_element(By.TAG_NAME, "body").text
    assert '<script>alert("qs")</script>' in body
    assert "holds" in body  # the comparison's checks

    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
