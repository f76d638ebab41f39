"""Ingest into daily partitions (Postgres only: SQLite stores one plain table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.storage.partitions import partition_name
from tests.factories import iso, prediction, register
from tests.storage.test_storage import _partitions


@pytest.fixture
def db_url(pg_url: str) -> str:
    return pg_url


def test_ingest_creates_the_partition_of_an_old_day(client, engine):
    register(client)
    old = datetime.now(UTC) - timedelta(days=20)
    r = client.post("/v1/predictions", json={"records": [prediction(0, timestamp=iso(old))]})
    assert r.status_code == 200, r.text
    assert partition_name(old.date()) in _partitions(engine)
    with engine.connect() as conn:
        where = conn.execute(text(
            "SELECT tableoid::regclass::text FROM predictions")).scalar_one()
    assert where == partition_name(old.date())


def test_a_partition_dropped_behind_this_process_is_made_again(client, engine):
    """Another replica's retention may drop a day's partition this process has seen: the
    batch's insert then finds no partition (a check violation), the process forgets what it
    knew, makes the partition again and stores the batch."""
    register(client)
    old = datetime.now(UTC) - timedelta(days=20)
    first = client.post("/v1/predictions", json={"records": [prediction(0, timestamp=iso(old))]})
    assert first.status_code == 200, first.text
    with engine.begin() as conn:
        conn.execute(text(f'DROP TABLE "{partition_name(old.date())}"'))
        conn.execute(text("DELETE FROM prediction_keys"))
    again = client.post("/v1/predictions", json={"records": [
        prediction(i, timestamp=iso(old)) for i in range(1, 4)]})
    assert again.status_code == 200, again.text
    assert again.json() == {"accepted": 3, "duplicates": 0}
    assert partition_name(old.date()) in _partitions(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictions")).scalar_one() == 3
