"""Maintenance windows: opened, listed latest first, cancelled only by their own model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.errors import NotFound
from app.registry import maintenance, models


def test_windows_are_listed_latest_first_and_cancelled_by_their_model(engine, settings,
                                                                       definition):
    for name in ("fraud", "other"):
        models.create_model(engine=engine, settings=settings,
                            definition={**definition, "name": name}, policy=None)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    early = maintenance.open_window(engine=engine, model="fraud", starts_at=start,
                                    ends_at=start + timedelta(hours=1), reason="retraining")
    late = maintenance.open_window(engine=engine, model="fraud",
                                   starts_at=start + timedelta(days=1),
                                   ends_at=start + timedelta(days=2), reason="rollout")
    assert [w.row.id for w in maintenance.list_windows(engine=engine, model="fraud")] == [
        late.row.id, early.row.id]
    with pytest.raises(NotFound) as err:
        maintenance.cancel_window(engine=engine, model="other", window_id=early.row.id)
    assert err.value.code == "unknown_maintenance_window"
    cancelled = maintenance.cancel_window(engine=engine, model="fraud", window_id=early.row.id)
    assert cancelled.model == "fraud" and cancelled.row == early.row
    assert [w.row.id for w in maintenance.list_windows(engine=engine, model="fraud")] == [
        late.row.id]
    with pytest.raises(NotFound):
        maintenance.open_window(engine=engine, model="nope", starts_at=start,
                                ends_at=start + timedelta(hours=1), reason="x")
