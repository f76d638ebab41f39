"""A model with a known drift, labels and cohorts in one window, for the page tests."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from app.settings import Settings
from tests.factories import iso
from tests.jobs_data import (
    SHIFTED,
    drift_model,
    labels_for,
    latest_window,
    post_all,
    reference_csv,
    traffic,
)


def page_settings(db_url: str, **over: object) -> Settings:
    return Settings(database_url=db_url, job_interval_seconds=300, job_window_seconds=3600,
                    job_catchup_windows=1, **over)


def seed_model(client, headers: dict[str, str] | None = None, n: int = 1500
               ) -> tuple[datetime, datetime]:
    """The credit model, v1 with a reference, ``n`` predictions in the latest window with
    SHIFTED features moved, every one labeled; the window's (start, end)."""
    rng = np.random.default_rng(7)
    h = headers or {}
    assert client.post("/v1/models", json=drift_model(), headers=h).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"},
                       headers=h).status_code == 201
    r = client.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng, 2000),
                    headers={"content-type": "text/csv", **h})
    assert r.status_code == 201, r.text
    start, end = latest_window()
    records, _, y, _ = traffic(rng, n, start, end, shifted=SHIFTED)
    client.headers.update(h)
    post_all(client, "/v1/predictions", records)
    post_all(client, "/v1/labels", labels_for(records, y))
    return start, end


def window_params(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": iso(start), "end": iso(end)}
