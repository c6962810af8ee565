"""Open an xctreg report.html in headless Chromium: what rendered, and a screenshot.

    python scripts/report_browser.py REPORT.html [--width 1280] [--screenshot OUT.png]

Prints, as JSON, every image (loaded or broken, its size and right edge in CSS pixels)
and table (rows, right edge), and the page's scroll width against the window's width:
a figure that runs off the right edge shows as ``right`` > ``window_width``.
Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)
and the selenium package (in the ``test`` extra). tests/test_demo.py runs it on the demo's
report; docs/img/report.png was taken with ``--screenshot``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

_INSPECT = """
const box = e => e.getBoundingClientRect();
return {
  images: [...document.images].map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
      width: box(i).width, height: box(i).height, right: box(i).right})),
  tables: [...document.querySelectorAll('table')].map(t => ({rows: t.rows.length, right: box(t).right})),
  scroll_width: document.documentElement.scrollWidth,
  window_width: window.innerWidth,
  height: document.documentElement.scrollHeight,
};
"""


def missing() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists() and shutil.which(Path(exe).name) is None:
            return f"{exe} is missing (Debian: apt-get install chromium chromium-driver)"
    return None


def _driver(width: int, height: int) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    # as root, in a sandbox with no network: no sandbox, no GPU, no background connections
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                 f"--window-size={width},{height}"):  # fmt: skip
        opts.add_argument(flag)
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else str(shutil.which("chromedriver"))
    return webdriver.Chrome(options=opts, service=Service(driver_path))


def inspect(report: str | Path, width: int = 1280, screenshot: str | Path | None = None) -> dict[str, Any]:
    """What Chromium rendered of ``report`` in a window ``width`` CSS pixels wide; with
    ``screenshot``, also a PNG of the whole page."""
    url = Path(report).resolve().as_uri()
    driver = _driver(width, 900)
    try:
        driver.set_page_load_timeout(60)
        driver.get(url)
        info = driver.execute_script(_INSPECT)
        if screenshot is not None:
            driver.set_window_size(width, min(int(info["height"]) + 140, 16000))
            driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    why = missing()
    if why is not None:
        raise SystemExit(f"error: {why}")
    print(json.dumps(inspect(args.report, args.width, args.screenshot), indent=1))


if __name__ == "__main__":
    main()
