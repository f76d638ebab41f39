"""Retention, failing jobs, and scheduler ownership on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select, text, update

from app.jobs import runner
from app.jobs.retention import run_retention
from app.jobs.scheduler import _sqlite_owner_lock
from app.settings import Settings
from app.storage.db import make_engine
from app.storage.partitions import PartitionManager, partition_name
from app.storage.tables import job_runs, reference_profiles
from tests.factories import iso, label, prediction, register
from tests.helpers import stored
from tests.jobs_data import drift_model, latest_window, post_all, reference_csv, traffic


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1, retention_days=60,
                    max_past_days=400)


def test_retention_removes_old_predictions_keys_and_labels(client, engine, settings):
    register(client)
    now = datetime.now(UTC)
    old = now - timedelta(days=45)
    recent = now - timedelta(days=2)
    post_all(client, "/v1/predictions", [prediction(0, timestamp=iso(old)),
                                         prediction(1, timestamp=iso(recent))])
    post_all(client, "/v1/labels", [label(0, timestamp=iso(old)),
                                    label(1, timestamp=iso(recent))])
    assert stored(engine) == {"predictions": 2, "prediction_keys": 2, "labels": 2}
    partitions = PartitionManager(engine)
    out = run_retention(engine, settings.model_copy(update={"retention_days": 30}), partitions,
                        now=now)
    assert stored(engine) == {"predictions": 1, "prediction_keys": 1, "labels": 1}
    if engine.dialect.name == "postgresql":
        assert out["partitions_dropped"] >= 1
        with engine.connect() as conn:
            names = {r[0] for r in conn.execute(text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions'"))}
        assert partition_name(old.date()) not in names
        assert partition_name(recent.date()) in names
    # the removed prediction may be sent again (its key went with it) without a 5xx, although
    # this process still remembers the dropped partition
    r = client.post("/v1/predictions", json={"records": [prediction(0, timestamp=iso(old))]})
    assert r.status_code == 200, r.text
    assert stored(engine)["predictions"] == 2


def test_timestamps_older_than_the_retention_are_refused(client, engine, settings):
    register(client)
    too_old = datetime.now(UTC) - timedelta(days=61)
    r = client.post("/v1/predictions", json={"records": [prediction(0, timestamp=iso(too_old))]})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "timestamp"
    assert "60 days" in r.json()["details"][0]["problem"]


def test_a_failing_job_records_its_error_and_is_retried(client, engine, settings):
    rng = np.random.default_rng(4)
    assert client.post("/v1/models", json=drift_model()).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    client.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng, 500),
                headers={"content-type": "text/csv"})
    start, end = latest_window()
    records, *_ = traffic(rng, 300, start, end)
    post_all(client, "/v1/predictions", records)
    with engine.begin() as conn:  # a profile this version of the code cannot read
        conn.execute(update(reference_profiles).values(profile={"features": {"f0": {}}}))
    assert runner.tick(engine, settings, now=end, jobs=["drift"]) == {"failure": 1}
    with engine.connect() as conn:
        run = conn.execute(select(job_runs)).one()
    assert run.status == "failure" and "KeyError" in run.error
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").status_code == 200  # the API is unaffected
    # fixed (an explicit replace: the version has predictions): the next tick computes the
    # same window
    r = client.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng, 500),
                    params={"replace": "true"}, headers={"content-type": "text/csv"})
    assert r.status_code == 201, r.text
    assert runner.tick(engine, settings, now=end, jobs=["drift"]) == {"success": 1}


def test_one_process_owns_the_scheduler_of_a_sqlite_file(tmp_path):
    a = make_engine(Settings(database_url=f"sqlite:///{tmp_path}/x.db"))
    b = make_engine(Settings(database_url=f"sqlite:///{tmp_path}/x.db"))
    first = _sqlite_owner_lock(a)
    assert first not in (None, True)
    # flock is per open file description: a second open in this process is refused too
    assert _sqlite_owner_lock(b) is None
    first.close()
    second = _sqlite_owner_lock(b)
    assert second not in (None, True)
    second.close()
    a.dispose()
    b.dispose()
