"""Windows through the API and the scheduler, on both stores: a reference uploaded after the
traffic, rows stored before summaries existed, windows across midnight, report bounds."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import delete, func, insert, select, update

from app.evaluation.profiles import ProfileCache
from app.jobs import runner
from app.monitoring import calibration_binary, fit_numeric_bins, psi
from app.settings import Settings
from app.storage import registry
from app.storage.tables import bucket_summaries, summary_backfill
from tests.factories import iso
from tests.jobs_data import SHIFTED, drift_model, labels_for, post_all, reference_csv, traffic


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_interval_seconds=300, job_window_seconds=3600,
                    job_catchup_windows=1)


def midnight_window() -> tuple[datetime, datetime]:
    """The hour around the last midnight: a day (and partition) boundary inside."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(minutes=30), today + timedelta(minutes=30)


def setup_traffic(client, rng, n=1500, shifted=SHIFTED):
    assert client.post("/v1/models", json=drift_model()).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    start, end = midnight_window()
    records, scores, y, regions = traffic(rng, n, start, end, shifted=shifted)
    labels = labels_for(records, y)
    post_all(client, "/v1/labels", labels[: n // 3])          # before their predictions
    post_all(client, "/v1/predictions", records)
    post_all(client, "/v1/labels", labels[n // 3: 2 * n // 3])  # after
    return start, end, records, scores, y


def report(client, kind: str, start, end, **params):
    r = client.get(f"/v1/models/credit/reports/{kind}",
                   params={"start": iso(start), "end": iso(end), **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_reference_uploaded_after_traffic_is_applied_to_every_row(client, engine, settings):
    rng = np.random.default_rng(4)
    start, end, records, *_ = setup_traffic(client, rng)
    before = report(client, "drift", start, end)["versions"][0]
    assert before["reference"]["source"] == "baseline"

    ref_bytes = reference_csv(rng)
    r = client.post("/v1/models/credit/versions/v1/reference", content=ref_bytes,
                    headers={"content-type": "text/csv"})
    assert r.status_code == 201
    after = report(client, "drift", start, end)["versions"][0]
    assert after["reference"]["source"] == "upload"
    # summaries were built on no profile (or the baseline): the report summarised the rows
    assert after["summaries"]["resummarised_rows"] == len(records)

    # the exact computation on the raw values, against the uploaded reference
    ref_rows = [line.split(",") for line in ref_bytes.decode().splitlines()]
    header, body = ref_rows[0], ref_rows[1:]
    for name in ("f0", "f3"):
        ref = np.array([float(row[header.index(name)]) for row in body])
        cur = np.array([rec["features"][name] for rec in records])
        got = next(f for f in after["features"] if f["feature"] == name)
        binning = fit_numeric_bins(ref, 10)
        assert got["current_counts"] == binning.counts(cur).tolist()
        assert got["psi"] == psi(binning.counts(ref), binning.counts(cur)).value
        d = stats.ks_2samp(ref, cur)
        assert got["ks_statistic"] == float(d.statistic)
        assert got["ks_pvalue"] == pytest.approx(float(d.pvalue), rel=1e-12)
    assert {f["feature"] for f in after["features"] if f["decision"] != "ok"} == set(SHIFTED)

    # the scheduler stores drift summaries on the new profile: read once, then reused
    assert runner.tick(engine, settings, now=end + timedelta(seconds=1),
                       jobs=["drift"]) == {"success": 1}
    again = report(client, "drift", start, end)["versions"][0]
    assert again["summaries"]["resummarised_rows"] == 0
    assert again["features"] == after["features"]


def test_rows_stored_before_summaries_existed_are_backfilled_once(client, engine, settings):
    rng = np.random.default_rng(6)
    start, end, records, scores, y = setup_traffic(client, rng, shifted=())
    expected = {kind: report(client, kind, start, end) for kind in ("calibration", "cohorts")}
    labeled = expected["calibration"]["versions"][0]["n"]
    assert labeled == 1000  # two thirds of the labels joined, before and after
    lib = calibration_binary(scores[: 2 * len(records) // 3],
                             y[: 2 * len(records) // 3].astype(float))
    assert expected["calibration"]["versions"][0]["ece"] == pytest.approx(lib.ece, rel=1e-12)

    # as if upgraded from a version without summaries: the migration leaves this behind
    with engine.begin() as conn:
        conn.execute(delete(bucket_summaries))
        conn.execute(insert(summary_backfill).values(
            version_id=1, model_id=1, received_before=datetime.now(UTC) + timedelta(seconds=1)))
    assert report(client, "calibration", start, end)["versions"] == []
    runner.tick(engine, settings, now=end + timedelta(seconds=1), jobs=[])
    for kind, body in expected.items():
        assert report(client, kind, start, end) == body
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(summary_backfill)).scalar() == 0
        rows = conn.execute(select(func.count()).select_from(bucket_summaries)).scalar()
    runner.tick(engine, settings, now=end + timedelta(seconds=2), jobs=[])  # nothing twice
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(bucket_summaries)).scalar() == rows
    for kind, body in expected.items():
        assert report(client, kind, start, end) == body


def test_compaction_keeps_every_sum(client, engine, settings):
    rng = np.random.default_rng(8)
    start, end, *_ = setup_traffic(client, rng, shifted=())
    before = {kind: report(client, kind, start, end) for kind in ("calibration", "cohorts")}
    with engine.begin() as conn:
        rows_before = conn.execute(select(func.count()).select_from(bucket_summaries)).scalar()
        # Earlier releases stored batch rows uncompressed ("R"): those are compacted too.
        b = bucket_summaries
        stored = conn.execute(select(b.c.id, b.c.payload)).all()
        for row_id, payload in stored[: len(stored) // 2]:
            conn.execute(update(b).where(b.c.id == row_id).values(
                payload=b"R" + zlib.decompress(bytes(payload)[1:])))
    assert report(client, "cohorts", start, end) == before["cohorts"]
    runner.tick(engine, settings, now=end + timedelta(hours=1), jobs=[])
    with engine.connect() as conn:
        per_bucket = conn.execute(
            select(bucket_summaries.c.bucket_start, bucket_summaries.c.kind, func.count())
            .group_by(bucket_summaries.c.bucket_start, bucket_summaries.c.kind)).all()
    assert all(c == 1 for *_, c in per_bucket) and len(per_bucket) < rows_before
    with engine.connect() as conn:  # every closed bucket is stored compressed
        marks = {bytes(p)[:1] for (p,) in conn.execute(select(bucket_summaries.c.payload))}
    assert marks == {b"Z"}
    for kind, body in before.items():
        assert report(client, kind, start, end) == body


def test_report_bounds_widen_to_whole_buckets(client):
    rng = np.random.default_rng(9)
    start, end, records, *_ = setup_traffic(client, rng, n=300)
    body = report(client, "cohorts", start + timedelta(seconds=7), end - timedelta(seconds=7))
    assert body["window_start"] == start.isoformat()
    assert body["window_end"] == end.isoformat()
    assert body["requested_start"] == (start + timedelta(seconds=7)).isoformat()
    assert body["versions"][0]["n"] == len(records)


def test_distinct_cohort_values_are_bounded_in_jobs_and_reports(db_url):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.storage.tables import metric_results
    from tests.conftest import clean

    settings = Settings(database_url=db_url, job_interval_seconds=300,
                        job_window_seconds=3600, job_catchup_windows=1,
                        summary_max_cohort_values=20)
    app = create_app(settings, run_scheduler=False)
    try:
        with TestClient(app) as client:
            rng = np.random.default_rng(12)
            start, end, records, *_ = setup_traffic(client, rng, n=3000, shifted=())
            # a client sending a new cohort value with every record
            for i, r in enumerate(records):
                r["prediction_id"] = f"many-{i}"
                r["cohorts"] = {"region": f"r{i}"}
            post_all(client, "/v1/predictions", records)
            post_all(client, "/v1/labels", labels_for(records, np.ones(len(records), int)))
            body = report(client, "cohorts", start, end)
            cohorts = body["versions"][0]["cohort_keys"]["region"]["cohorts"]
            assert len(cohorts) <= 20
            assert "(other)" in {c["cohort"] for c in cohorts}
            assert sum(c["n"] for c in cohorts) == 2000 + 3000  # every labeled row counted
            runner.tick(app.state.engine, settings, now=end + timedelta(seconds=1),
                        jobs=["cohorts"])
            with app.state.engine.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(metric_results).where(
                    metric_results.c.metric == "cohort_error_ratio")).scalar()
            assert stored <= 20
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()


def models(engine) -> list:
    with engine.connect() as conn:
        return [m for m, _ in registry.list_models(conn=conn)]


def test_rows_no_summary_counts_are_found_by_the_audit_and_summarised_once(client, engine,
                                                                           settings):
    """As after a rolling upgrade (an older process stored rows and summarised nothing), a
    restore from a backup or rows copied in by hand: some buckets' summaries are gone, and
    the labels that came after their predictions are in no summary of another bucket. The
    audit finds every bucket whose summaries do not count its stored rows and summarises it
    again; a second audit changes nothing."""
    rng = np.random.default_rng(12)
    start, end, records, *_ = setup_traffic(client, rng, shifted=())
    kinds = ("drift", "calibration", "cohorts")

    def reports() -> dict:
        out = {kind: report(client, kind, start, end) for kind in kinds}
        for v in out["drift"]["versions"]:  # a baseline fitted for each report: its own time
            v["reference"].pop("created_at", None)
            v["reference"].pop("window_start", None)
            v["reference"].pop("window_end", None)
        return out

    expected = reports()
    b = bucket_summaries
    with engine.begin() as conn:
        buckets = sorted({r for (r,) in conn.execute(select(b.c.bucket_start).distinct())})
        assert len(buckets) == 12
        conn.execute(delete(b).where(b.c.bucket_start.in_(buckets[:3])))  # nothing summarised
        pairs_only = conn.execute(delete(b).where(  # labels that came later: not summarised
            b.c.bucket_start == buckets[5], b.c.kind == "outcome", b.c.n == 0)).rowcount
    assert pairs_only >= 1
    assert report(client, "calibration", start, end) != expected["calibration"]
    runner._last_audit.clear()  # this process audited another test's database just now
    out = runner.maintain_summaries(engine, settings, end + timedelta(seconds=1),
                                    ProfileCache(), models(engine))
    assert out["repaired_buckets"] == 4 and out["audited_buckets"] >= 12
    assert reports() == expected
    runner._last_audit.clear()
    again = runner.maintain_summaries(engine, settings, end + timedelta(seconds=2),
                                      ProfileCache(), models(engine))
    assert again["repaired_buckets"] == 0
    assert reports() == expected
