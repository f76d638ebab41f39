"""Maintenance (retraining) windows of a model: opening, listing and cancelling them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from app.errors import NotFound, Problem
from app.storage import maintenance as store
from app.storage import registry
from app.storage.maintenance import MaintenanceRow


@dataclass(frozen=True)
class Window:
    """A maintenance window with its model's registered name."""

    model: str
    row: MaintenanceRow


def open_window(*, engine: Engine, model: str, starts_at: datetime, ends_at: datetime,
                reason: str) -> Window:
    with engine.begin() as conn:
        m = registry.require_model(conn=conn, name=model)
        return Window(m.name, store.open_window(conn=conn, model_id=m.id, starts_at=starts_at,
                                                ends_at=ends_at, reason=reason))


def list_windows(*, engine: Engine, model: str) -> list[Window]:
    """The model's windows, latest start first."""
    with engine.connect() as conn:
        m = registry.require_model(conn=conn, name=model)
        return [Window(m.name, w) for w in store.list_windows(conn=conn, model_id=m.id)]


def cancel_window(*, engine: Engine, model: str, window_id: int) -> Window:
    """Remove one of the model's windows; NotFound when it has none of that id (another
    model's window is not this model's to cancel)."""
    with engine.begin() as conn:
        m = registry.require_model(conn=conn, name=model)
        row = store.cancel(conn=conn, model_id=m.id, window_id=window_id)
        if row is None:
            raise NotFound("unknown_maintenance_window",
                           f"model {m.name!r} has no maintenance window of this id",
                           [Problem("no such window of this model", field="window_id")])
        return Window(m.name, row)
