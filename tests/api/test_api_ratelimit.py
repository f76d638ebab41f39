"""Rate limits per caller: 429 with Retry-After past the request or record rate; a batch
larger than the whole allowance is 413 (it could never pass); callers are counted apart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from app.storage import tokens
from tests.conftest import clean
from tests.factories import iso
from tests.helpers import stored

MODEL = {"name": "m", "task": "regression", "features": [{"name": "x", "type": "numeric"}]}


@pytest.fixture
def limited(db_url):
    app = create_app(Settings(database_url=db_url, auth="on", token_cache_seconds=0,
                              rate_limit_requests_per_second=0.5,
                              rate_limit_records_per_second=1, rate_limit_burst_seconds=10),
                     run_scheduler=False)
    with TestClient(app) as client:
        yield app, client
    clean(app.state.engine)
    app.state.engine.dispose()


def token(app, *scopes: str) -> dict[str, str]:
    with app.state.engine.begin() as conn:
        return {"authorization": "Bearer " + tokens.create(
            conn=conn, name="t", scopes=list(scopes), models=None, expires_at=None)[1]}


def records(n: int, start: int = 0) -> dict:
    return {"records": [{"model": "m", "version": "v1", "prediction_id": f"p{start + i}",
                         "timestamp": iso(datetime.now(UTC)), "features": {"x": 1.0},
                         "prediction": {"value": 1.0}} for i in range(n)]}


def test_requests_past_the_rate_are_429_with_retry_after(limited):
    app, client = limited
    a, b = token(app, "read"), token(app, "read")
    codes = [client.get("/v1/models", headers=a).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]  # 0.5 a second over a 10 s burst: 5
    r = client.get("/v1/models", headers=a)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10
    assert r.json()["code"] == "rate_limited"
    assert client.get("/v1/models", headers=b).status_code == 200  # another caller
    assert client.get("/healthz").status_code == 200  # health is never limited


def test_records_past_the_rate_are_429_and_an_oversized_batch_413(limited):
    app, client = limited
    admin, ingest = token(app, "admin"), token(app, "ingest")
    assert client.post("/v1/models", json=MODEL, headers=admin).status_code == 201
    assert client.post("/v1/models/m/versions", json={"version": "v1"},
                       headers=admin).status_code == 201
    r = client.post("/v1/predictions", json=records(11), headers=ingest)
    assert r.status_code == 413 and r.json()["code"] == "batch_over_rate_limit"
    assert client.post("/v1/predictions", json=records(6), headers=ingest).status_code == 200
    r = client.post("/v1/predictions", json=records(6, 6), headers=ingest)
    assert r.status_code == 429 and "retry-after" in r.headers
    assert stored(app.state.engine)["predictions"] == 6  # nothing of the refused batches


def test_counters_of_past_callers_expire_without_a_thread_per_hit():
    import threading
    import time

    from app.api.ratelimit import RateLimits

    limits = RateLimits(requests_per_second=100, records_per_second=1000, burst_seconds=1)
    storage = limits._limiter.storage
    time.sleep(0.05)  # the library's own start-up timer has run out
    threads = threading.active_count()
    for i in range(50):
        limits.request(f"caller-{i}")
        limits.records(f"caller-{i}", 10)
        assert threading.active_count() == threads  # no timer thread started per hit
    assert len(storage.storage) >= 50
    time.sleep(2.1)  # past twice the window: every counter has expired
    storage._expired_at -= storage.EXPIRE_EVERY
    limits.request("late")
    assert set(storage.storage) == {k for k in storage.storage if "late" in k}
