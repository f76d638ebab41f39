"""The memo of costly figures shared through the database (memo_results), on SQLite and
Postgres: a figure one process stored is what another reads back, bit for bit, without
computing it; a changed input is another key; concurrent writers keep one row; retention keeps
the newest rows; and a version page after a scheduler tick takes every exact KS figure from
the table and still shows the REST report's numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import insert, select

from app.evaluation import figures
from app.jobs.retention import run_retention
from app.jobs.runner import tick
from app.monitoring import gates
from app.monitoring._memo import stable_key
from app.monitoring.drift import KS_MEMO, KsPoints, ks_from_counts
from app.storage import memo
from app.storage.tables import memo_results
from tests.pages.pageparse import parse
from tests.pages.pages_data import page_settings, seed_model, window_params


@pytest.fixture
def settings(db_url: str, request: pytest.FixtureRequest):
    return page_settings(db_url, **getattr(request, "param", {}))


def window_counts(seed: int, shift: float) -> tuple[KsPoints, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=3000)
    cur = rng.normal(shift, size=1200)
    points = KsPoints.of(ref)
    slots, counts = points.slot_counts(np.sort(cur))
    dense = np.zeros(points.n_slots, dtype=np.int64)
    dense[slots] = counts
    return points, dense, cur


def fresh_process() -> None:
    """What a newly started process has: no local memo."""
    KS_MEMO.clear()
    gates.KS_NOISE_MEMO.clear()


def test_a_stored_figure_is_read_back_bit_for_bit_by_another_process(engine):
    points, dense, cur = window_counts(1, 0.15)
    fresh_process()
    with engine.begin() as conn, figures.shared(conn) as store:  # the scheduler's job
        first = ks_from_counts(points, dense, d_threshold=0.05)
        q = gates.ks_noise_quantile(1200, 3000, 0.01, 21)
        assert store.write(conn) == 2
    want = stats.ks_2samp(points.sample, cur, method="exact")
    assert first.pvalue == want.pvalue and first.statistic == want.statistic
    fresh_process()
    with engine.connect() as conn, figures.shared(conn) as store:  # the service, later
        again = ks_from_counts(points, dense, d_threshold=0.05)
        assert gates.ks_noise_quantile(1200, 3000, 0.01, 21) == q
        assert store.pending == {}  # nothing computed, so nothing to write
    assert again == first and KS_MEMO.shared_hits == 1 and gates.KS_NOISE_MEMO.shared_hits == 1
    # another window (five more values in a slot) or another knob is another key
    other = dense.copy()
    other[np.flatnonzero(other)[0]] += 5
    with engine.connect() as conn, figures.shared(conn) as store:
        ks_from_counts(points, other, d_threshold=0.05)
        ks_from_counts(points, dense, d_threshold=0.06)
        assert len(store.pending) == 2
    assert KS_MEMO.shared_hits == 1
    with engine.connect() as conn:
        assert memo.count(conn) == 2


def test_concurrent_writers_of_one_figure_keep_one_row(engine):
    points, dense, _ = window_counts(2, 0.0)
    stores = []
    for _ in range(2):  # two processes, each computing before either has stored
        fresh_process()
        with engine.connect() as conn, figures.shared(conn) as store:
            ks_from_counts(points, dense)
        stores.append(store)
    assert stores[0].pending == stores[1].pending and len(stores[0].pending) == 1
    assert [s.flush(engine) for s in stores] == [1, 1]  # the second insert keeps the first
    with engine.connect() as conn:
        assert memo.count(conn) == 1


def test_a_window_s_figures_are_read_in_one_go_pending_ones_included(engine):
    keys = [i.to_bytes(2, "big") * 16 for i in range(1200)]  # more than one statement's 500
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(memo_results), [{"key": k, "value": f"v{i}", "created_at": now}
                                            for i, k in enumerate(keys) if i % 3])
    with engine.connect() as conn:
        store = memo.TableMemo(conn)
        store.put(keys[0], "pending")
        got = store.get_many([*keys, b"x" * 32, keys[1]])
    want = {k: f"v{i}" for i, k in enumerate(keys) if i % 3}
    assert got == {**want, keys[0]: "pending"}


def test_the_key_is_canonical_and_refuses_what_it_cannot_encode():
    assert stable_key("ns", (np.float64(0.1), np.int64(3), True)) == stable_key(
        "ns", (0.1, 3, True))
    assert stable_key("ns", (0.1,)) != stable_key("ns", (0.1 + 2 ** -55,))
    assert stable_key("ns", (1,)) != stable_key("other", (1,))
    with pytest.raises(TypeError):
        stable_key("ns", (object(),))


@pytest.mark.parametrize("settings", [{"memo_max_rows": 3}], indirect=True)
def test_retention_keeps_the_newest_rows(client, engine, settings):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(memo_results), [
            {"key": bytes([i]) * 32, "value": str(i), "created_at": t0 + timedelta(hours=i)}
            for i in range(5)])
    out = run_retention(engine, settings, client.app.state.partitions)
    assert out["memo_deleted"] == 2
    with engine.connect() as conn:
        kept = sorted(conn.execute(select(memo_results.c.value)).scalars())
    assert kept == ["2", "3", "4"]


def test_a_page_after_a_tick_takes_every_exact_ks_figure_from_the_table(client, engine,
                                                                       settings):
    start, end = seed_model(client)
    fresh_process()  # the scheduler's process: it computes what it stores
    counts = tick(engine, settings, now=end + timedelta(seconds=1))
    assert counts.get("success", 0) > 0 and "failure" not in counts, counts
    with engine.connect() as conn:
        assert memo.count(conn) > 20  # 20 numeric features' KS and their noise quantile
    fresh_process()  # the service: another process than the scheduler's
    params = window_params(start, end)
    page = client.get("/ui/models/credit/versions/v1", params=params)
    assert page.status_code == 200
    assert KS_MEMO.misses >= 20 and KS_MEMO.shared_hits == KS_MEMO.misses
    assert gates.KS_NOISE_MEMO.shared_hits == gates.KS_NOISE_MEMO.misses >= 1
    fields = parse(page.text).fields
    drift = client.get("/v1/models/credit/reports/drift",
                       params={**params, "version": "v1"}).json()["versions"][0]
    for f in drift["features"]:
        if f["type"] == "numeric":
            row = fields[f"feature:{f['feature']}"]
            assert float(row["ks_pvalue"]) == pytest.approx(f["ks_pvalue"], rel=5e-4,
                                                            abs=1e-300)


def test_a_figure_stored_meanwhile_never_fails_the_job_that_computed_it_too(pg_url):
    """Two jobs compute the same figure under REPEATABLE READ: the second's insert meets the
    first's committed row after its snapshot (PostgreSQL: a serialization failure). Its
    savepoint undoes only the figure; the job's own writes commit."""
    from sqlalchemy import create_engine, text

    from app.storage import migrate

    engine = create_engine(pg_url)
    migrate.upgrade(engine)
    key, now = b"test-race-" + datetime.now(UTC).isoformat().encode(), datetime.now(UTC)
    try:
        with engine.connect() as job:
            job = job.execution_options(isolation_level="REPEATABLE READ")
            with job.begin():
                job.execute(text("CREATE TEMPORARY TABLE job_out (x int)"))
                store = memo.TableMemo(job)
                assert store.get(key) is None  # the snapshot is taken
                with engine.begin() as other:  # another job stores the same figure
                    other.execute(insert(memo_results), {"key": key, "value": "1",
                                                         "created_at": now})
                store.put(key, "1")
                assert store.write_within(job) == 0 and store.pending == {}
                job.execute(text("INSERT INTO job_out VALUES (7)"))  # the job goes on
                assert job.execute(text("SELECT x FROM job_out")).scalar_one() == 7
        with engine.connect() as conn:
            assert conn.execute(select(memo_results.c.value)
                                .where(memo_results.c.key == key)).scalar_one() == "1"
    finally:
        with engine.begin() as conn:
            conn.execute(memo_results.delete().where(memo_results.c.key == key))
        engine.dispose()
