"""Roll-ups on both stores: old buckets merged into hours, then days, give the very reports
the buckets gave (a twin model fed the same traffic and never rolled up is the oracle); a
second roll-up changes nothing; late rows inside a rolled-up span count and are merged
next; a crash in a roll-up's transaction leaves every row as it was; reports over a range
that cuts a rolled-up day widen to it and say so; the audit leaves rolled-up spans alone;
imported summaries sent again after their bucket was rolled up count once; retention keeps
a rolled-up day until all of it has expired."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from app.evaluation import rollup, windows
from app.evaluation.profiles import ProfileCache
from app.jobs import runner
from app.jobs.scheduler import JobScheduler
from app.observability.metrics import ServiceMetrics
from app.settings import Settings
from app.storage import registry
from app.storage import summaries as store
from app.storage.db import as_utc
from app.storage.partitions import PartitionManager
from app.storage.summaries import SummaryRow
from app.storage.tables import bucket_summaries
from tests.api.test_summaries_api import folded, setup_model, upload
from tests.api.test_summaries_api import traffic as summary_traffic
from tests.api.test_summaries_api import window as summary_window
from tests.factories import iso
from tests.jobs_data import drift_model, labels_for, post_all, reference_csv, traffic

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
KINDS = ("drift", "calibration", "cohorts")


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_interval_seconds=300, job_window_seconds=3600,
                    job_catchup_windows=1)


def day_five_days_ago() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=5)


def dyadic(records: list[dict]) -> None:
    """Scores on a 1/1024 grid: every sum of the summaries is exact in float64, so sums
    added in another grouping (hours, then the window) are equal to the last bit."""
    for r in records:
        r["prediction"]["score"] = round(r["prediction"]["score"] * 1024) / 1024


def feed(client, name: str, records: list[dict], labels: list[dict]) -> None:
    post_all(client, "/v1/predictions", [{**r, "model": name} for r in records])
    post_all(client, "/v1/labels", [{**x, "model": name} for x in labels])


def setup_twins(client, n: int = 1200):
    """Models "credit" (to be rolled up) and "twin" (never), the same reference, the same
    traffic over the two hours either side of a midnight five days ago, 2/3 labeled."""
    rng = np.random.default_rng(21)
    ref = reference_csv(rng, 1000)
    for name in ("credit", "twin"):
        assert client.post("/v1/models", json=drift_model(name)).status_code == 201
        assert client.post(f"/v1/models/{name}/versions", json={"version": "v1"}
                           ).status_code == 201
        assert client.post(f"/v1/models/{name}/versions/v1/reference", content=ref,
                           headers={"content-type": "text/csv"}).status_code == 201
    day = day_five_days_ago()
    records, _, y, _ = traffic(rng, n, day - 2 * HOUR, day + 2 * HOUR)
    dyadic(records)
    labels = labels_for(records, y)
    for name in ("credit", "twin"):
        feed(client, name, records, labels[: 2 * n // 3])
    return day, records, labels


def report(client, name: str, kind: str, start, end) -> dict:
    r = client.get(f"/v1/models/{name}/reports/{kind}",
                   params={"start": iso(start), "end": iso(end)})
    assert r.status_code == 200, r.text
    body = r.json()
    body.pop("model")
    for v in body["versions"]:  # how many rows were read, not what they hold
        v.get("summaries", {}).pop("buckets", None)
        v.get("summaries", {}).pop("resummarised_buckets", None)  # cells: hours or buckets
        v.get("reference", {}).pop("created_at", None)  # each twin's own upload time
    return body


def raw(client, kind: str, start, end) -> bytes:
    r = client.get(f"/v1/models/credit/reports/{kind}",
                   params={"start": iso(start), "end": iso(end)})
    assert r.status_code == 200, r.text
    return r.content


def assert_twins_agree(client, spans) -> None:
    for start, end in spans:
        for kind in KINDS:
            assert report(client, "credit", kind, start, end) == \
                report(client, "twin", kind, start, end), (kind, start, end)


def model(engine, name: str):
    with engine.connect() as conn:
        return registry.require_model(conn=conn, name=name)


def rows_of(engine, name: str) -> list[tuple]:
    b = bucket_summaries
    with engine.connect() as conn:
        return sorted((r[0], as_utc(r[1]), *r[2:]) for r in conn.execute(
            select(b.c.version_id, b.c.bucket_start, b.c.kind, b.c.profile_key, b.c.origin,
                   b.c.bucket_seconds, b.c.n, b.c.payload)
            .where(b.c.model_id == model(engine, name).id)))


def outcome_total(rows: list[tuple]) -> int:
    return sum(r[6] for r in rows if r[2] == "outcome")


def test_rolled_up_hours_and_days_report_what_their_buckets_reported(client, engine,
                                                                        settings):
    day, records, labels = setup_twins(client)
    spans = [(day - 2 * HOUR, day + 2 * HOUR), (day - DAY, day + DAY)]
    assert_twins_agree(client, spans)
    credit, now = model(engine, "credit"), datetime.now(UTC)
    # the label-only reports as bytes; the drift report also says how many rows it read
    before = {(k, s): raw(client, k, *s) for k in ("calibration", "cohorts") for s in spans}

    got = rollup.rollup(engine, credit, settings, now, 10_000)
    hourly = rows_of(engine, "credit")
    assert got.spans == len(hourly) and got.rows > len(hourly)
    assert {r[5] for r in hourly} == {3600}
    assert len({r[:5] for r in hourly}) == len(hourly)  # one row per hour, kind, profile
    assert outcome_total(hourly) == len(records)
    assert_twins_agree(client, spans)
    assert {(k, s): raw(client, k, *s) for k, s in before} == before
    # run again: nothing left to roll up, nothing changes
    assert rollup.rollup(engine, credit, settings, now, 10_000) == rollup.Rolled()
    assert rows_of(engine, "credit") == hourly

    # the audit, looking back over the rolled-up hours, repairs nothing
    a = windows.audit(engine, credit, day - DAY, day + DAY, bucket_seconds=300,
                      profiles=ProfileCache())
    assert a.repaired == 0 and rows_of(engine, "credit") == hourly

    # late labels and late predictions land inside rolled-up hours: read at once, merged next
    late = [{**r, "prediction_id": f"late-{i}"} for i, r in enumerate(records[:40])]
    for name in ("credit", "twin"):
        feed(client, name, late, labels[2 * len(records) // 3:][:100])
    assert_twins_agree(client, spans)
    assert {r[5] for r in rows_of(engine, "credit")} == {0, 3600}
    rollup.rollup(engine, credit, settings, now, 10_000)
    again = rows_of(engine, "credit")
    assert {r[5] for r in again} == {3600} and len({r[:5] for r in again}) == len(again)
    assert outcome_total(again) == len(records) + len(late)
    assert_twins_agree(client, spans)

    # days, once the traffic is older than MODELMON_SUMMARY_ROLLUP_DAILY_AFTER_SECONDS
    rollup.rollup(engine, credit, settings, now + 4 * DAY, 10_000)
    daily = rows_of(engine, "credit")
    assert {r[5] for r in daily} == {86_400} and {r[1] for r in daily} == {day - DAY, day}
    assert outcome_total(daily) == len(records) + len(late)
    assert_twins_agree(client, spans[1:])  # the window aligned to days (the other widens)
    assert rollup.rollup(engine, credit, settings, now + 4 * DAY, 10_000) == rollup.Rolled()


def test_a_new_reference_rebuilds_a_rolled_up_hour_whole(client, engine, settings):
    """Drift of a rolled-up hour (with a late bucket row inside it) on a reference uploaded
    after the roll-up: summarised again from its stored rows, on the fly by a report and
    stored by the scheduler's rebuild, as one span, so nothing counts twice."""
    day, records, _ = setup_twins(client, n=600)
    credit = model(engine, "credit")
    rollup.rollup(engine, credit, settings, datetime.now(UTC), 10_000)
    late = [{**r, "prediction_id": f"late-{i}"} for i, r in enumerate(records[:30])]
    for name in ("credit", "twin"):
        feed(client, name, late, [])
    ref = reference_csv(np.random.default_rng(5), 800)
    for name in ("credit", "twin"):  # the versions have predictions: an explicit replace
        assert client.post(f"/v1/models/{name}/versions/v1/reference", content=ref,
                           params={"replace": "true"},
                           headers={"content-type": "text/csv"}).status_code == 201
    span = (day - 2 * HOUR, day + 2 * HOUR)
    on_the_fly = report(client, "credit", "drift", *span)
    assert on_the_fly["versions"][0]["summaries"]["resummarised_rows"] == len(records) + 30
    assert on_the_fly == report(client, "twin", "drift", *span)
    vid = rows_of(engine, "credit")[0][0]
    with engine.connect() as conn:
        cp = ProfileCache().get(conn, [vid])[vid]
    read = windows.resummarise(engine, credit, vid, *span, cp, 300)
    assert read == len(records) + 30
    drift_rows = [r for r in rows_of(engine, "credit") if r[2] == "drift"]
    assert {r[5] for r in drift_rows} == {3600} and {r[3] for r in drift_rows} == {cp.key}
    assert sum(r[6] for r in drift_rows) == len(records) + 30
    stored = report(client, "credit", "drift", *span)
    assert stored["versions"][0]["summaries"]["resummarised_rows"] == 0
    on_the_fly["versions"][0]["summaries"]["resummarised_rows"] = 0
    assert stored == on_the_fly


def test_a_report_that_cuts_a_rolled_up_day_covers_the_whole_day_and_says_so(client, engine,
                                                                              settings):
    day, records, _ = setup_twins(client, n=300)
    rollup.rollup(engine, model(engine, "credit"), settings, datetime.now(UTC) + 4 * DAY,
                  10_000)
    asked = (day - HOUR - timedelta(minutes=7), day + HOUR)
    body = report(client, "credit", "cohorts", *asked)
    assert (body["window_start"], body["window_end"]) == ((day - DAY).isoformat(),
                                                          (day + DAY).isoformat())
    assert (body["requested_start"], body["requested_end"]) == tuple(a.isoformat()
                                                                     for a in asked)
    assert body["versions"][0]["n"] == len(records)
    # the twin, never rolled up, reads the buckets asked for (widened to whole buckets only)
    twin = report(client, "twin", "cohorts", *asked)
    assert twin["window_start"] == (day - HOUR - timedelta(minutes=10)).isoformat()
    assert twin["versions"][0]["n"] < len(records)


def test_a_roll_up_that_fails_midway_leaves_every_row_as_it_was(client, engine, settings):
    day, records, _ = setup_twins(client, n=300)
    credit = model(engine, "credit")
    before = rows_of(engine, "credit")
    start = day - 2 * HOUR
    with pytest.raises(RuntimeError), engine.begin() as conn:
        merged = rollup.roll_cell(conn, credit.id, before[0][0], start, 3600, "outcome", "",
                                  "", 1000)
        assert merged > 1  # taken and replaced inside the transaction...
        raise RuntimeError("the process dies before the commit")
    assert rows_of(engine, "credit") == before  # ...and nothing of it stayed
    rollup.rollup(engine, credit, settings, datetime.now(UTC), 10_000)
    assert outcome_total(rows_of(engine, "credit")) == len(records)
    assert_twins_agree(client, [(day - 2 * HOUR, day + 2 * HOUR)])


def test_two_replicas_rolling_up_at_once_count_every_row_once(client, engine, settings):
    day, records, _ = setup_twins(client, n=600)
    credit, now = model(engine, "credit"), datetime.now(UTC)
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: rollup.rollup(engine, credit, settings, now, 10_000),
                             range(2)))
    rows = rows_of(engine, "credit")
    assert {r[5] for r in rows} == {3600} and len({r[:5] for r in rows}) == len(rows)
    assert sum(d.spans for d in done) >= len(rows)
    assert outcome_total(rows) == len(records)
    assert_twins_agree(client, [(day - 2 * HOUR, day + 2 * HOUR)])


def test_the_scheduler_rolls_up_a_bounded_batch_per_tick(client, engine, settings):
    setup_twins(client, n=300)
    bounded = settings.model_copy(update={"summary_rollup_batch": 3})
    models = [model(engine, "credit"), model(engine, "twin")]
    out = runner.maintain_summaries(engine, bounded, datetime.now(UTC), ProfileCache(), models)
    spans = [r for name in ("credit", "twin") for r in rows_of(engine, name) if r[5]]
    assert len(spans) == 3 and out["rolled_up_rows"] > 3
    for _ in range(20):
        runner.maintain_summaries(engine, settings, datetime.now(UTC), ProfileCache(), models)
    assert {r[5] for name in ("credit", "twin") for r in rows_of(engine, name)} == {3600}


def test_a_scheduler_tick_rolls_up_and_counts_the_rows_it_merged(client, engine, settings):
    setup_twins(client, n=300)
    registry_ = CollectorRegistry()
    metrics = ServiceMetrics(registry_)
    scheduler = JobScheduler(engine, settings, PartitionManager(engine), hooks=metrics)
    scheduler.tick()
    merged = registry_.get_sample_value("modelmon_rollup_merged_rows_total")
    spans = [r for name in ("credit", "twin") for r in rows_of(engine, name)]
    assert {r[5] for r in spans} == {3600} and merged > len(spans)


def test_an_import_sent_again_after_its_hour_was_rolled_up_counts_once(client, engine,
                                                                      settings):
    """The ledger of imports (summary_imports) is kept per bucket when the summaries are
    rolled up: a retried upload is recognised; new content for a rolled-up hour counts and
    is merged into it by the next roll-up."""
    setup_model(client, "imp")
    doc, folds = folded(client, "imp", summary_traffic(600))
    body = upload(doc, folds)
    assert client.post("/v1/summaries", json=body).json()["accepted"] == len(folds)
    span = summary_window()
    expected = {k: report(client, "imp", k, *span) for k in KINDS}
    imp, later = model(engine, "imp"), datetime.now(UTC) + 3 * DAY
    rollup.rollup(engine, imp, settings, later, 10_000)
    rolled = rows_of(engine, "imp")
    assert {(r[4], r[5]) for r in rolled} == {("import", 3600)} and len(rolled) == 2
    again = client.post("/v1/summaries", json=body)
    assert again.json() == {"accepted": 0, "duplicates": len(folds), "predictions": 0}
    assert {k: report(client, "imp", k, *span) for k in KINDS} == expected
    more = client.post("/v1/summaries", json=upload(doc, folds, sequence=2))
    assert more.json() == {"accepted": len(folds), "duplicates": 0, "predictions": 600}
    rollup.rollup(engine, imp, settings, later, 10_000)
    assert len(rows_of(engine, "imp")) == 2 and outcome_total(rows_of(engine, "imp")) == 1200
    assert report(client, "imp", "calibration", *span)["versions"][0]["predictions"] == 1200


def test_rollup_never_reaches_what_a_job_or_the_audit_reads():
    s = Settings(summary_rollup_hourly_after_seconds=3600, summary_rollup_daily_after_seconds=0)
    reach = 86_400 + 300 * 12 + 21_600  # long horizon, catch-up windows, audit lookback
    assert rollup.reach_seconds(s, 0) == reach
    assert rollup.levels(s, 0) == [(3600, reach)]
    assert rollup.levels(s, 7200) == [(3600, reach + 7200)]  # a model's label lag
    assert rollup.levels(Settings(), 0) == [(3600, 172_800), (86_400, 604_800)]
    # buckets of two hours roll up into days only
    assert [sp for sp, _ in rollup.levels(Settings(job_interval_seconds=7200,
                                                   job_window_seconds=7200), 0)] == [86_400]
    with pytest.raises(ValueError, match="DAILY_AFTER"):
        Settings(summary_rollup_hourly_after_seconds=10 * 86_400)


def test_retention_keeps_a_rolled_up_day_until_all_of_it_has_expired(engine):
    day = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        store.append(conn=conn, model_id=1, rows=[
            SummaryRow(1, day, "outcome", "", 5, b"Z", "", 86_400),
            SummaryRow(1, day + 2 * HOUR, "outcome", "", 1, b"Z", "", 3600),
            SummaryRow(1, day + 3 * HOUR, "outcome", "", 1, b"Z")])
    with engine.begin() as conn:
        assert store.delete_before(conn=conn, cutoff=day + 4 * HOUR) == 2  # hour, bucket
        assert store.delete_before(conn=conn, cutoff=day + DAY - HOUR) == 0
        assert store.delete_before(conn=conn, cutoff=day + DAY) == 1
