"""Maintenance (retraining) windows of a model: plain functions over a connection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from app.storage.db import as_utc
from app.storage.tables import maintenance_windows as mw


@dataclass(frozen=True)
class MaintenanceRow:
    id: int
    model_id: int
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime

    def is_open(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at


def _row(r: Any) -> MaintenanceRow:
    return MaintenanceRow(id=r.id, model_id=r.model_id, starts_at=as_utc(r.starts_at),
                          ends_at=as_utc(r.ends_at), reason=r.reason,
                          created_at=as_utc(r.created_at))


def open_window(*, conn: Connection, model_id: int, starts_at: datetime, ends_at: datetime,
                reason: str) -> MaintenanceRow:
    """Store a window; times are stored in UTC (SQLite keeps wall times as given)."""
    new_id = conn.execute(insert(mw).values(
        model_id=model_id, starts_at=as_utc(starts_at), ends_at=as_utc(ends_at), reason=reason,
        created_at=datetime.now(UTC)).returning(mw.c.id)).scalar_one()
    return _row(conn.execute(select(mw).where(mw.c.id == new_id)).one())


def list_windows(*, conn: Connection, model_id: int) -> list[MaintenanceRow]:
    """The model's windows, latest start first."""
    rows = conn.execute(select(mw).where(mw.c.model_id == model_id)
                        .order_by(mw.c.starts_at.desc(), mw.c.id.desc()))
    return [_row(r) for r in rows]


def cancel(*, conn: Connection, model_id: int, window_id: int) -> MaintenanceRow | None:
    """Remove one of the model's windows; None when it has no window of that id."""
    row = conn.execute(select(mw).where(mw.c.id == window_id, mw.c.model_id == model_id)
                       ).first()
    if row is None:
        return None
    conn.execute(delete(mw).where(mw.c.id == window_id))
    return _row(row)
