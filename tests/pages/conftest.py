"""The browser the pages' browser tests drive: Debian's Chromium, headless, through Debian's
chromedriver and selenium (scripts/install-browser.sh installs both when missing; the tests
fail, never skip, when they still cannot be had), and what they check on every page."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.conftest import ROOT

INSTALL = ROOT / "scripts" / "install-browser.sh"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "grafana: the pages' settings carry a Grafana URL")


def browser_paths() -> tuple[str, str]:
    """chromium and chromedriver, installed by the project's script when missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        subprocess.run(["sh", str(INSTALL)], check=True, timeout=900)
    found = shutil.which("chromium"), shutil.which("chromedriver")
    assert all(found), f"chromium or chromedriver still missing after {INSTALL}"
    return found  # type: ignore[return-value]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def requested(chrome: webdriver.Chrome) -> list[str]:
    """The URLs the pages asked for since the last call (the DevTools network log)."""
    urls = []
    for entry in chrome.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def visit_clean(chrome: webdriver.Chrome, host: str, shot) -> None:
    """The page now shown loaded with no console message and nothing from elsewhere."""
    assert chrome.execute_script("return document.readyState") == "complete"
    assert chrome.get_log("browser") == []
    urls = requested(chrome)
    assert any(urlsplit(u).netloc == host for u in urls), urls  # the log saw the page
    outside = [u for u in urls if not u.startswith("data:") and urlsplit(u).netloc != host]
    assert outside == []
    assert chrome.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
