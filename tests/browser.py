"""A real headless Chromium for the HTML report's tests, driven by selenium.

The distribution's browser and driver (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; apt
packages ``chromium`` and ``chromium-driver``, which .ci/run installs) are passed to selenium
explicitly, so Selenium Manager never looks for (or downloads) a browser of its own
(``SE_OFFLINE`` too). The flags keep the browser off the network: this machine has none, and
Chromium's background services would otherwise spam refused connections into the log. Each
browser gets a fresh profile in a temporary directory.

Where Chromium, its driver or selenium is missing the test skips with the reason (fails under
``CI=true``: tests/needs.py's rule).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import needs

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--window-size=1400,1600",
)


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None)


def browser_paths() -> tuple[str, str]:
    """The Chromium and chromedriver binaries, or skip (fail under CI) naming the package."""
    chromium = _first(CHROMIUM_PATHS)
    if chromium is None:
        needs.unavailable("chromium is not installed (apt install chromium)")
    driver = _first(DRIVER_PATHS)
    if driver is None:
        needs.unavailable("chromedriver is not installed (apt install chromium-driver)")
    return chromium, driver


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium WebDriver with its browser log readable (``get_log('browser')``)."""
    binary, driver_path = browser_paths()
    try:
        from selenium import webdriver  # noqa: PLC0415 - a dev extra; skip cleanly without it
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    except ImportError:
        needs.unavailable("selenium is not installed (pip install -e '.[dev]')")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach for the network
    profile = tempfile.mkdtemp(prefix="hslab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """The browser log's SEVERE entries (script errors, failed loads) since the last read."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


__all__ = ["browser_paths", "chromium", "console_errors", "file_url"]
