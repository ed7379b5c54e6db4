"""Headless Chromium for the page tests (the report's and the exported model's), driven by
Selenium, offline: the network is switched off before any page loads."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs headless Chromium and its driver: apt-get install chromium chromium-driver",
)


@contextlib.contextmanager
def offline_chromium(width: int = 1280, height: int = 900) -> Iterator:
    """A Chrome WebDriver on headless Chromium with no network, logging performance (network
    requests) and the browser console; quit on exit."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--no-proxy-server",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
        )
        yield driver
    finally:
        driver.quit()


def requested_urls(driver) -> list[str]:
    """The URLs of every request the pages of ``driver`` made so far (its performance log)."""
    return [
        message["params"]["request"]["url"]
        for entry in driver.get_log("performance")
        if (message := json.loads(entry["message"])["message"])["method"]
        == "Network.requestWillBeSent"
    ]


def console_errors(driver) -> list[dict]:
    """The browser console's errors so far."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
