"""A real headless Chromium for tests of the HTML pages the tool writes, via selenium.

The distribution's browser and driver (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; apt
packages ``chromium`` and ``chromium-driver``, installed by .ci/run) are handed to selenium
explicitly, so Selenium Manager never fetches a browser of its own (``SE_OFFLINE``). The flags
keep the browser off the network and each browser gets a fresh profile directory, removed
after. Where Chromium, its driver or selenium is missing, the test skips with the reason (and
fails under ``CI=true``: tests/needs.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests import needs

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)


@contextmanager
def chromium_driver() -> Iterator[Any]:
    """A headless Chromium WebDriver whose console log is readable (``get_log("browser")``)."""
    needs.require(os.access(CHROMIUM, os.X_OK), "chromium is not installed (apt install chromium)")
    needs.require(
        os.access(CHROMEDRIVER, os.X_OK),
        "chromedriver is not installed (apt install chromium-driver)",
    )
    try:
        from selenium import webdriver  # noqa: PLC0415 - a dev extra: skip cleanly without it
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    except ImportError:
        needs.unavailable("selenium is not installed (pip install -e '.[dev]')")
    os.environ["SE_OFFLINE"] = "true"
    profile = tempfile.mkdtemp(prefix="hslab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_problems(driver: Any) -> list[str]:
    """The page's console entries at WARNING or worse (errors, failed loads, CSP refusals)."""
    return [
        str(entry.get("message"))
        for entry in driver.get_log("browser")
        if entry.get("level") in {"SEVERE", "WARNING"}
    ]


__all__ = ["chromium_driver", "console_problems"]
