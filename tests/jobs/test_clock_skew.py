"""A replica whose clock runs 180 s ahead of the database's (libfaketime, a real process):
its scheduler decides no window before the window has ended on the database's clock, and its
retention deletes nothing the database's clock still keeps; the skew is exported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.evaluation.windows import aligned_end
from app.settings import Settings
from app.storage.db import clock
from app.storage.tables import job_runs, labels
from tests.conftest import ROOT
from tests.factories import iso, register

CHILD = r"""
import json, sys
from app.jobs.scheduler import JobScheduler
from app.settings import Settings
from app.storage.db import make_engine
from app.storage.partitions import PartitionManager

class Hooks:
    def job_done(self, job, outcome, seconds): pass
    def summaries_kept(self, upkeep): pass
    def tick_done(self, outcome, seconds): print(json.dumps({"tick": outcome}), flush=True)
    def clock_seen(self, skew): print(json.dumps({"skew": skew}), flush=True)

settings = Settings(database_url=sys.argv[1], job_interval_seconds=60, job_window_seconds=60,
                    job_catchup_windows=3, retention_days=1)
engine = make_engine(settings)
scheduler = JobScheduler(engine, settings, PartitionManager(engine), hooks=Hooks())
scheduler.tick()
scheduler.retention()
"""


@pytest.fixture
def settings(pg_url: str) -> Settings:
    return Settings(database_url=pg_url, job_interval_seconds=60, job_window_seconds=60,
                    job_catchup_windows=3, retention_days=1)


@pytest.mark.skipif(shutil.which("faketime") is None and not os.environ.get("CI"),
                    reason="faketime is installed by scripts/install-monitoring-tools.sh")
def test_a_replica_ahead_of_the_database_decides_on_the_database_clock(client, engine,
                                                                       settings):
    register(client)
    db_now = clock(engine)
    # A label one day old but 90 s inside the retention on the database's clock: a replica
    # 180 s ahead that cut on its own clock would delete it.
    kept = {"model": "fraud", "prediction_id": "old", "label": "fraud",
            "timestamp": iso(db_now - timedelta(days=1) + timedelta(seconds=90))}
    assert client.post("/v1/labels", json={"records": [kept]}).status_code == 200
    out = subprocess.run(["faketime", "-f", "+180s", sys.executable, "-c", CHILD,
                          settings.database_url], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    said = [json.loads(line) for line in out.stdout.splitlines()]
    skews = [d["skew"] for d in said if "skew" in d]
    assert skews and all(170 < s < 190 for s in skews), said
    assert {"tick": "success"} in said
    after = clock(engine)
    with engine.connect() as conn:
        ends = conn.execute(select(job_runs.c.window_end)).scalars().all()
        n_labels = conn.execute(select(func.count()).select_from(labels)).scalar_one()
    assert ends, "the tick computed the windows that had ended"
    # every window it decided had ended on the database's clock (the replica's clock had
    # crossed two or three more boundaries)
    assert max(ends) <= aligned_end(after, 60)
    assert n_labels == 1
