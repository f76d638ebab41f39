"""The pages in a real browser: Debian's Chromium, headless, driven by selenium through
Debian's chromedriver (scripts/install-browser.sh installs both when missing; the test fails,
never skips, when they still cannot be had). Through the login form to the models page, the
version page, a feature's page and the versions page: every page loads, with no console
message of level warning or worse and no request leaving the host; a screenshot of each is
written as the test's artefact."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import httpx2
import pytest
from selenium.webdriver.common.by import By

from app.jobs.runner import tick
from tests.api.test_api_auth import bearer, make_token
from tests.conftest import LiveServer
from tests.jobs_data import SHIFTED
from tests.pages.conftest import visit_clean
from tests.pages.pages_data import page_settings, seed_model


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url, auth="on", pages_runbook_base="https://runbooks.example/rb")


def test_every_page_loads_in_chromium_cleanly(app, engine, settings, browser,
                                               tmp_path_factory):
    shots = tmp_path_factory.mktemp("screenshots")
    with LiveServer(app) as server, httpx2.Client(base_url=server.url, timeout=60) as http:
        _, end = seed_model(http, bearer(make_token(engine, "admin", "ingest")))
        tick(engine, settings, now=end + timedelta(seconds=1))  # stored windows to draw
        read = make_token(engine, "read", name="viewer")
        host = urlsplit(server.url).netloc
        browser.get(f"{server.url}/ui/models/credit/versions/v1")
        assert "/ui/login" in browser.current_url
        browser.find_element(By.NAME, "token").send_keys(read)
        browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
        assert browser.current_url.endswith("/ui/models/credit/versions/v1")
        visit_clean(browser, host, shots / "version.png")
        first = browser.find_element(By.CSS_SELECTOR, "#drift tbody tr")
        assert first.get_attribute("data-feature") in SHIFTED
        paging = first.find_element(By.CSS_SELECTOR, "[data-decision]")
        assert paging.get_attribute("data-decision") in ("warning", "critical")
        assert browser.find_elements(By.CSS_SELECTOR, "#drift svg.hist rect")
        assert browser.find_elements(By.CSS_SELECTOR, "#calibration svg.reliability circle")
        assert browser.find_elements(By.CSS_SELECTOR, "#drift svg.spark polyline")
        assert browser.find_elements(By.CSS_SELECTOR, "#ece-series svg.series circle")
        browser.find_element(By.LINK_TEXT, first.get_attribute("data-feature")).click()
        assert "/features/" in browser.current_url
        visit_clean(browser, host, shots / "feature.png")
        assert browser.find_elements(By.CSS_SELECTOR, "#ecdf svg.ecdf path")
        assert browser.find_elements(By.CSS_SELECTOR, "#series svg.series circle")
        browser.find_element(By.PARTIAL_LINK_TEXT, "credit / v1").click()
        visit_clean(browser, host, shots / "version-from-feature.png")
        browser.find_element(By.PARTIAL_LINK_TEXT, "credit versions").click()
        assert browser.current_url.endswith("/ui/models/credit/versions")
        visit_clean(browser, host, shots / "versions.png")
        assert browser.find_element(By.CSS_SELECTOR, "#versions tr[data-version=v1]")
        browser.get(f"{server.url}/ui")
        visit_clean(browser, host, shots / "models.png")
        browser.find_element(By.LINK_TEXT, "v1").click()
        visit_clean(browser, host, shots / "version-from-models.png")
        browser.find_element(By.CSS_SELECTOR, "a[rel=prev]").click()
        visit_clean(browser, host, shots / "previous-window.png")
    print(f"screenshots: {shots}")
