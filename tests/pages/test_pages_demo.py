"""After `modelmon demo`'s incident (x0 and x1 drift, the scores become over-confident), the
serving version's page in Chromium lists a drifted feature first with its paging decision,
and, once the jobs computed the window holding it, the models page says the version pages."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import pytest
from selenium.webdriver.common.by import By

from app.jobs.runner import tick
from tests.conftest import ROOT, LiveServer
from tests.pages.conftest import visit_clean
from tests.pages.pages_data import page_settings


@pytest.fixture
def settings(db_url: str):
    return page_settings(db_url)


def test_the_demo_incident_is_the_first_row_of_its_page(app, settings, browser,
                                                        tmp_path_factory):
    shots = tmp_path_factory.mktemp("demo-screenshots")
    with LiveServer(app) as server:
        out = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--url", server.url,
                              "--duration", "8", "--incident-after", "0", "--speed", "4",
                              "--batch-size", "100"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        now = datetime.now(UTC)
        window = urlencode({"start": (now - timedelta(hours=1)).isoformat(),
                            "end": (now + timedelta(minutes=5)).isoformat()})
        host = urlsplit(server.url).netloc
        browser.get(f"{server.url}/ui/models/demo-fraud/versions/v2?{window}")
        visit_clean(browser, host, shots / "demo-v2.png")
        first = browser.find_element(By.CSS_SELECTOR, "#drift tbody tr")
        assert first.get_attribute("data-feature") in ("x0", "x1")
        decided = first.find_element(By.CSS_SELECTOR, "[data-decision]")
        assert decided.get_attribute("data-decision") == "critical"
        # the models page says what the jobs decided: the tick that computes the window
        # holding the incident (its bucket closed)
        tick(app.state.engine, settings, now=now + timedelta(minutes=5))
        browser.get(f"{server.url}/ui?{window}")
        visit_clean(browser, host, shots / "demo-models.png")
        v2 = browser.find_element(By.CSS_SELECTOR,
                                  "tr[data-model='demo-fraud'][data-version='v2']")
        assert v2.find_element(By.CSS_SELECTOR, "[data-decision]").get_attribute(
            "data-decision") == "critical"
    print(f"screenshots: {shots}")
