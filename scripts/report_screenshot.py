"""Screenshot a report.html in headless Chromium (Debian's chromium + chromium-driver, selenium from the test extra).

    .venv/bin/python scripts/report_screenshot.py runs/demo/report/report.html docs/report-screenshot.png

`--height` sets the window height in CSS pixels (the top of the page is captured); `--full` captures the whole page.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--full", action="store_true", help="Capture the whole page.")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={args.width},{args.height}")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        driver.get(args.html.resolve().as_uri())
        if args.full:
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(args.width, height)
        driver.save_screenshot(str(args.png))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
