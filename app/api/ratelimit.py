"""Rate limits per caller: requests, and records in ingest batches, each with a burst; and
refused authentications per client address, checked before any token is looked up.

The caller is its token (when tokens are required) or its client address. Bookkeeping is the
`limits` library's sliding window counter (O(1) per hit, whatever the cost of the hit; its
moving window keeps one entry per record, a list of a million at 100,000 records a second),
in this process's memory: N replicas (or N workers) allow N
times the rate in total, which is what a per-replica limit means; put a shared limiter in
front of them for a global one. Over the limit: 429 with Retry-After, in the error shape.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from app.errors import ApiError, Problem


class _Storage(MemoryStorage):
    """limits' memory storage, expiring old keys inline at most once a second: the library
    starts a timer thread on a hit whenever its last one has finished, i.e. on nearly every
    request of a busy service (a thread start under a busy GIL costs a fraction of a ms)."""

    EXPIRE_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._expired_at = time.monotonic()

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._expired_at >= self.EXPIRE_EVERY:
            self._expired_at = now
            self._MemoryStorage__expire_events()


class RateLimits:
    def __init__(self, *, requests_per_second: float, records_per_second: float,
                 burst_seconds: int, auth_failures_per_second: float = 0.0) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(_Storage())
        self.burst_seconds = burst_seconds
        self._requests = self._item(requests_per_second)
        self._records = self._item(records_per_second)
        self._failures = self._item(auth_failures_per_second)

    def _item(self, per_second: float) -> RateLimitItemPerSecond | None:
        """``per_second`` over the burst window (at least one); None (no limit) for 0."""
        if per_second <= 0:
            return None
        return RateLimitItemPerSecond(max(1, int(per_second * self.burst_seconds)),
                                      self.burst_seconds)

    def _retry_after(self, item: RateLimitItemPerSecond, key: str) -> int:
        stats = self._limiter.get_window_stats(item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _hit(self, item: RateLimitItemPerSecond | None, key: str, cost: int,
             what: str) -> None:
        if item is None or cost <= 0:
            return
        if self._limiter.hit(item, key, cost=cost):
            return
        retry = self._retry_after(item, key)
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

    def _failing(self, address: str) -> ApiError:
        item = self._failures
        assert item is not None
        retry = self._retry_after(item, f"auth:{address}")
        return ApiError(429, "rate_limited",
                        f"too many refused authentications from this address: at most "
                        f"{item.amount} per {self.burst_seconds} s; retry after {retry} s "
                        "with a valid token", [Problem("authentication failures exceeded",
                                                       field="authorization")],
                        headers={"Retry-After": str(retry)})

    def before_lookup(self, address: str) -> None:
        """429 when ``address`` has used up its refused authentications: checked before a
        token is looked up, so an address sending bad tokens costs no database query."""
        if self._failures is not None and not self._limiter.test(self._failures,
                                                                 f"auth:{address}"):
            raise self._failing(address)

    def refused(self, address: str) -> None:
        """Count one refused authentication of ``address``; 429 instead of the refusal once
        it is past its allowance."""
        if self._failures is not None and not self._limiter.hit(self._failures,
                                                                f"auth:{address}"):
            raise self._failing(address)
