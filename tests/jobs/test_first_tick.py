"""A newcomer's first minutes: the scheduler's first tick within a minute of start, and an
empty report that says what the latest stored data is and when it will show."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from app.evaluation import reports
from app.evaluation.windows import aligned_end
from app.jobs.scheduler import FIRST_TICK_SECONDS, JobScheduler
from app.storage.partitions import PartitionManager
from tests.factories import iso, prediction, register


class Hooks:
    def __init__(self) -> None:
        self.ticked = threading.Event()

    def job_done(self, job, outcome, seconds) -> None:
        pass

    def tick_done(self, outcome, seconds) -> None:
        self.ticked.set()

    def clock_seen(self, skew) -> None:
        pass


def test_the_first_tick_runs_within_a_minute_of_start(engine, settings):
    hooks = Hooks()
    scheduler = JobScheduler(engine, settings, PartitionManager(engine), hooks=hooks)
    started = datetime.now(UTC)
    assert scheduler.start()
    try:
        first = scheduler.scheduler.get_job("first-tick").next_run_time
        assert first <= started + timedelta(seconds=60)
        assert FIRST_TICK_SECONDS < 60
        # the aligned schedule alone would wait for the second boundary from now
        aligned = scheduler.scheduler.get_job("windows").next_run_time
        assert aligned > aligned_end(started, settings.job_interval_seconds) + timedelta(
            seconds=settings.job_interval_seconds)
        assert hooks.ticked.wait(timeout=120), "the first tick never ran"
    finally:
        scheduler.shutdown(timeout=30)


def test_an_empty_report_says_what_the_latest_data_is_and_when_it_shows(client, settings):
    register(client)
    r = client.get("/v1/models/fraud/reports/drift").json()
    assert r["empty"] is True and r["latest_prediction"] is None
    assert "no predictions are stored for this model yet" in r["note"]
    now = datetime.now(UTC)
    next_tick = datetime.fromisoformat(r["next_tick"])
    assert next_tick == aligned_end(now, settings.job_interval_seconds) + timedelta(
        seconds=settings.job_interval_seconds) or next_tick > now  # a boundary may pass
    # a prediction in the bucket still open: after the default window
    sent = now.replace(microsecond=0)
    assert client.post("/v1/predictions", json={"records": [
        prediction(0, timestamp=iso(sent))]}).status_code == 200
    for kind in ("drift", "calibration", "cohorts"):
        r = client.get(f"/v1/models/fraud/reports/{kind}").json()
        if not r["empty"]:  # a boundary passed since: the default window now holds it
            continue
        assert datetime.fromisoformat(r["latest_prediction"]) == sent, kind
        bucket = aligned_end(sent, settings.job_interval_seconds)
        closes = bucket + timedelta(seconds=settings.job_interval_seconds)
        assert f"closes at {closes.isoformat()}" in r["note"]
        hint = r["note"].rsplit(" ", 1)[1]  # the query to ask, pasted as it is
        assert hint == f"?start={iso(bucket)}&end={iso(closes)}", r["note"]
        shown = client.get(f"/v1/models/fraud/reports/{kind}{hint}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["window_start"] == bucket.isoformat()
        if kind == "drift":  # the others count labelled predictions: none here
            assert shown.json()["versions"][0]["n"] == 1, shown.text
    # a window before the prediction: nothing sent since is said as such
    r = client.get("/v1/models/fraud/reports/drift", params={
        "start": iso(now + timedelta(hours=1)), "end": iso(now + timedelta(hours=2))}).json()
    assert r["empty"] and "before it: nothing was sent since" in r["note"]


def test_the_note_follows_the_latest_prediction(engine, settings, client):
    """The three cases of the note, on a fixed clock."""
    register(client)
    with engine.connect() as conn:
        sc = reports.scope(conn, settings, "fraud", None,
                           datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC))
        said = reports._when_empty(conn, settings, sc, now=datetime(2026, 1, 1, 0, 7, tzinfo=UTC))
    assert said["next_tick"] == "2026-01-01T00:10:00+00:00"
    assert said["latest_prediction"] is None
