"""Ingest slots: how many batches one process folds and stores at once.

Past a few batches in flight, more of them only share the interpreter and the database:
each takes longer, and at saturation a batch costs about twice the CPU it costs alone
(BENCHMARKS.md, "Ingest slots"). So a batch waits for a slot on the event loop, where
waiting costs nothing, and takes a worker thread and a database connection only once it
has one. A batch that waits longer than ``MODELMON_DB_HANG_SECONDS`` is answered 503 with
``Retry-After``: the process is overloaded or its database has stalled, and a client that
retries later is better served than one whose request sits in a queue without end."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from app.errors import ApiError, Problem

T = TypeVar("T")


class IngestSlots:
    """A capacity limiter for the ingest routes (predictions, labels, imported summaries)."""

    def __init__(self, n: int, wait_seconds: float, retry_after: int,
                 on_refused: Callable[[], None] = lambda: None) -> None:
        self._limiter = anyio.CapacityLimiter(n)
        self._wait = wait_seconds
        self._retry_after = retry_after
        self._on_refused = on_refused  # modelmon_http_shed_total{reason="ingest_wait"}

    @property
    def waiting(self) -> int:
        return self._limiter.statistics().tasks_waiting

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread once a slot is free."""
        with anyio.move_on_after(self._wait) as waited:
            await self._limiter.acquire()
        if waited.cancelled_caught:
            self._on_refused()
            raise ApiError(503, "overloaded",
                           "the service is storing as many batches as it can; retry later",
                           [Problem(f"no ingest slot free within {self._wait:g} s",
                                    field="body")],
                           headers={"Retry-After": str(self._retry_after)})
        try:
            return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
        finally:
            self._limiter.release()
