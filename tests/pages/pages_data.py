"""A model with a known drift, labels and cohorts in one window, for the page tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from app.jobs.runner import tick
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
    return Settings(**{"database_url": db_url, "job_interval_seconds": 300,
                       "job_window_seconds": 3600, "job_catchup_windows": 1, **over})


def register(client, rng: np.random.Generator, reference_rows: int,
             headers: dict[str, str] | None = None) -> None:
    """The credit model and its v1 with a reference of ``reference_rows`` rows."""
    h = headers or {}
    assert client.post("/v1/models", json=drift_model(), headers=h).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"},
                       headers=h).status_code == 201
    r = client.post("/v1/models/credit/versions/v1/reference",
                    content=reference_csv(rng, reference_rows),
                    headers={"content-type": "text/csv", **h})
    assert r.status_code == 201, r.text


def seed_model(client, headers: dict[str, str] | None = None, n: int = 1500
               ) -> tuple[datetime, datetime]:
    """The credit model, v1 with a reference, ``n`` predictions in the latest window with
    SHIFTED features moved, every one labeled; the window's (start, end)."""
    rng = np.random.default_rng(7)
    h = headers or {}
    register(client, rng, 2000, h)
    start, end = latest_window()
    records, _, y, _ = traffic(rng, n, start, end, shifted=SHIFTED)
    client.headers.update(h)
    post_all(client, "/v1/predictions", records)
    post_all(client, "/v1/labels", labels_for(records, y))
    return start, end


def window_params(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": iso(start), "end": iso(end)}


def seed_history(client, engine, settings: Settings, n: int = 1500,
                 second_version: bool = False) -> tuple[datetime, datetime]:
    """``seed_model``, then (with ``second_version``) v2 with the same reference and 300
    labeled predictions in the window's last bucket; then one scheduler tick just after the
    window's end, which stores the results of the last ``job_catchup_windows`` windows."""
    start, end = seed_model(client, n=n)
    if second_version:
        rng = np.random.default_rng(8)
        assert client.post("/v1/models/credit/versions",
                           json={"version": "v2"}).status_code == 201
        r = client.post("/v1/models/credit/versions/v2/reference",
                        content=reference_csv(rng, 2000), headers={"content-type": "text/csv"})
        assert r.status_code == 201, r.text
        last = end - timedelta(seconds=settings.job_interval_seconds)
        records, _, y, _ = traffic(rng, 300, last, end, version="v2", prefix="v2")
        post_all(client, "/v1/predictions", records)
        post_all(client, "/v1/labels", labels_for(records, y))
    counts = tick(engine, settings, now=end + timedelta(seconds=1))
    assert counts.get("success", 0) > 0 and "failure" not in counts, counts
    return start, end
