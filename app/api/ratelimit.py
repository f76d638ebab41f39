"""Rate limits per caller: requests, and records in ingest batches, each with a burst.

The caller is its token (when tokens are required) or its client address. Bookkeeping is the
`limits` library's moving window, in this process's memory: N replicas (or N workers) allow N
times the rate in total, which is what a per-replica limit means; put a shared limiter in
front of them for a global one. Over the limit: 429 with Retry-After, in the error shape.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from app.errors import ApiError, Problem


class RateLimits:
    def __init__(self, *, requests_per_second: float, records_per_second: float,
                 burst_seconds: int) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.burst_seconds = burst_seconds
        self._requests = (RateLimitItemPerSecond(
            max(1, int(requests_per_second * burst_seconds)), burst_seconds)
            if requests_per_second > 0 else None)
        self._records = (RateLimitItemPerSecond(
            max(1, int(records_per_second * burst_seconds)), burst_seconds)
            if records_per_second > 0 else None)

    def _hit(self, item: RateLimitItemPerSecond | None, key: str, cost: int,
             what: str) -> None:
        if item is None or cost <= 0:
            return
        if self._limiter.hit(item, key, cost=cost):
            return
        stats = self._limiter.get_window_stats(item, key)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        if cost > item.amount:
            raise ApiError(413, "batch_over_rate_limit",
                           f"one batch of {cost} {what} exceeds the {item.amount} allowed per "
                           f"{self.burst_seconds} s; send smaller batches",
                           [Problem(f"limit is {item.amount} {what} per "
                                    f"{self.burst_seconds} s", field="records")])
        raise ApiError(429, "rate_limited",
                       f"too many {what}: at most {item.amount} per {self.burst_seconds} s "
                       f"for this caller; retry after {retry} s",
                       [Problem(f"{what} rate exceeded", field="authorization")],
                       headers={"Retry-After": str(retry)})

    def request(self, key: str) -> None:
        self._hit(self._requests, key, 1, "requests")

    def records(self, key: str, n: int) -> None:
        self._hit(self._records, key, n, "records")
