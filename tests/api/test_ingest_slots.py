"""Ingest slots: at most n batches stored at once per process; a batch that waits past the
bound is a 503 with Retry-After, and a slot is given back however its batch ends."""

from __future__ import annotations

import threading

import anyio
import pytest

from app.api.slots import IngestSlots
from app.errors import ApiError


def test_a_batch_waiting_past_the_bound_is_a_503_and_the_slot_comes_back() -> None:
    slots = IngestSlots(1, wait_seconds=0.2, retry_after=7)
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
