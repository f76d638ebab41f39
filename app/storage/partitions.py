"""Daily range partitions of `predictions` on Postgres, created ahead of need.

A partition is named ``predictions_pYYYYMMDD`` and covers [day 00:00 UTC, next day 00:00 UTC).
Creation is serialised across replicas with a transaction-scoped advisory lock, because two
concurrent ``CREATE TABLE IF NOT EXISTS ... PARTITION OF`` can still collide in the catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, text

from app.storage import locks
from app.storage.db import is_postgres


def partition_name(day: date) -> str:
    return f"predictions_p{day:%Y%m%d}"


class PartitionManager:
    """Remembers which days exist, so the ingest path pays for a query only on a new day."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: set[date] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return is_postgres(self._engine)

    def ensure_ahead(self, days_ahead: int, *, today: date | None = None) -> None:
        """Yesterday, today and the next ``days_ahead`` days."""
        start = today or datetime.now(UTC).date()
        self.ensure_days(start + timedelta(days=i) for i in range(-1, days_ahead + 1))

    def ensure_days(self, days: Iterable[date]) -> None:
        if not self.enabled:
            return
        missing = sorted(set(days) - self._known)
        if not missing:
            return
        with self._lock, self._engine.begin() as conn:
            locks.hold(conn, locks.PARTITIONS)
            existing = {
                row[0]
                for row in conn.execute(
                    text(
                        "SELECT c.relname FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent "
                        "WHERE p.relname = 'predictions'"
                    )
                )
            }
            for day in missing:
                name = partition_name(day)
                if name not in existing:
                    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
                    hi = lo + timedelta(days=1)
                    conn.execute(
                        text(
                            f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF predictions '
                            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
                        )
                    )
        self._known.update(missing)

    def forget(self) -> None:
        """Drop the cache (after a retention job dropped partitions, or in tests)."""
        with self._lock:
            self._known.clear()
