"""Ingest slots: at most n batches stored at once per process; a batch that waits past the
bound is a 503 with Retry-After, and a slot is given back however its batch ends."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from app.api.slots import IngestSlots
from app.errors import ApiError


def test_a_batch_waiting_past_the_bound_is_a_503_and_the_slot_comes_back() -> None:
    refusals: list[int] = []
    slots = IngestSlots(1, wait_seconds=0.2, retry_after=7,
                        on_refused=lambda: refusals.append(1))
    release, started = threading.Event(), threading.Event()

    def held() -> str:
        started.set()
        release.wait(10)
        return "first"

    async def main() -> dict[str, object]:
        out: dict[str, object] = {}
        async with anyio.create_task_group() as tg:
            async def first() -> None:
                out["first"] = await slots.run(held)
            tg.start_soon(first)
            await anyio.to_thread.run_sync(started.wait, 10)
            assert slots.waiting == 0
            with pytest.raises(ApiError) as refused:
                await slots.run(lambda: "second")
            out["refused"] = refused.value
            release.set()
        out["third"] = await slots.run(lambda x: x * 2, 21)  # the slot was given back
        return out

    out = anyio.run(main)
    first, refused, third = out["first"], out["refused"], out["third"]
    assert first == "first" and third == 42
    assert isinstance(refused, ApiError)
    assert refused.status == 503 and refused.code == "overloaded"
    assert refused.headers == {"Retry-After": "7"}
    assert "0.2 s" in refused.details[0].problem
    assert refusals == [1]  # counted once, as modelmon_http_shed_total{reason="ingest_wait"}


def test_batches_past_the_slots_wait_in_turn_and_never_run_more_than_n_at_once() -> None:
    slots = IngestSlots(2, wait_seconds=30, retry_after=5)
    lock = threading.Lock()
    running = [0]
    most = [0]

    def batch(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        threading.Event().wait(0.02)
        with lock:
            running[0] -= 1
        return i

    async def main() -> list[int]:
        done: list[int] = []
        async with anyio.create_task_group() as tg:
            for i in range(12):
                async def one(i: int = i) -> None:
                    done.append(await slots.run(batch, i))
                tg.start_soon(one)
        return done

    done = anyio.run(main)
    assert sorted(done) == list(range(12))
    assert most[0] == 2


def test_a_failing_batch_gives_its_slot_back() -> None:
    slots = IngestSlots(1, wait_seconds=0.5, retry_after=5)

    def fails() -> None:
        raise ValueError("bad batch")

    async def main() -> str:
        with pytest.raises(ValueError, match="bad batch"):
            await slots.run(fails)
        return await slots.run(lambda: "next")

    assert anyio.run(main) == "next"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # held on a table lock
@pytest.mark.parametrize("settings", [{"ingest_slots": 1, "db_hang_seconds": 1.0}],
                         indirect=True)
def test_a_served_batch_behind_a_stuck_one_is_a_503_counted_and_the_stuck_one_is_stored(
        settings, live_server, client, engine):
    """Postgres: a batch held on a table lock keeps the one slot; the next batch gets 503
    `overloaded` with Retry-After past the wait, counted in modelmon_http_shed_total; the
    held batch is stored once the lock goes."""
    import httpx2
    from sqlalchemy import text

    from tests.factories import prediction, register

    register(client)
    holder = engine.connect()
    tx = holder.begin()
    holder.execute(text("LOCK TABLE bucket_summaries IN ACCESS EXCLUSIVE MODE"))
    answers: dict[str, object] = {}
    with httpx2.Client(base_url=live_server.url, timeout=60) as c:
        def first() -> None:
            answers["first"] = c.post("/v1/predictions",
                                      json={"records": [prediction(0)]}).status_code
        t = threading.Thread(target=first)
        t.start()
        try:
            deadline = time.monotonic() + 30  # the first batch waits on the lock
            while time.monotonic() < deadline and not _waiting_on_lock(engine):
                time.sleep(0.05)
            assert _waiting_on_lock(engine)
            with httpx2.Client(base_url=live_server.url, timeout=60) as c2:
                r = c2.post("/v1/predictions", json={"records": [prediction(1)]})
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "overloaded"
                assert r.headers["retry-after"] == str(settings.retry_after_seconds)
                scrape = c2.get("/metrics").text
            assert 'modelmon_http_shed_total{reason="ingest_wait"} 1.0' in scrape
        finally:
            tx.rollback()
            holder.close()
            t.join(60)
    assert answers["first"] == 200
    with engine.connect() as conn:
        ids = sorted(conn.execute(text("SELECT prediction_id FROM predictions")).scalars())
    assert ids == ["p-0"]  # the refused batch stored nothing


def _waiting_on_lock(engine) -> bool:
    from sqlalchemy import text
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar())
