"""A served process settles its heap once started (bootstrap.settle_heap): what start-up left is
frozen out of the cyclic collector's full passes, and the young generation is collected less
often. Run in a child process: freezing is for good, and the tests' own process makes apps by
the hundred."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import gc, json, sys
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings
from app.bootstrap import GC_YOUNG_THRESHOLD
app = create_app(Settings(database_url=sys.argv[1]), run_scheduler=False,
                 settle=sys.argv[2] == "settle")
before = gc.get_freeze_count()
with TestClient(app) as c:
    ready = c.get("/healthz").status_code
    print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "ready": ready,
                      "threshold": gc.get_threshold()[0], "wanted": GC_YOUNG_THRESHOLD}))
"""


def _run(url: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, url, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_served_app_freezes_what_start_up_left(sqlite_url):
    got = _run(sqlite_url, "settle")
    assert got["before"] == 0 and got["ready"] == 200
    # the loaded libraries alone are well over 100,000 objects
    assert got["frozen"] > 100_000
    assert got["threshold"] == got["wanted"] > 700


def test_an_app_made_without_settling_leaves_the_collector_alone(sqlite_url):
    got = _run(sqlite_url, "plain")
    assert got["frozen"] == 0 and got["threshold"] == 700
