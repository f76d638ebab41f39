"""Maintenance windows over HTTP, on both stores: open (admin), list (read), cancel (admin),
opened by a version registration on request; /metrics exports modelmon_model_maintenance
from the stored windows; every bad input is a 4xx naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.settings import Settings
from app.storage.tables import audit_log
from tests.api.test_api_auth import bearer, operator_and_viewer
from tests.api.test_metrics import scrape
from tests.factories import binary_model, iso, regression_model, version

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, metrics_cache_seconds=0)


def maintenance_gauge(client, model: str = "fraud") -> float | None:
    return scrape(client).get(("modelmon_model_maintenance", (("model", model),)))


def window(start: datetime, end: datetime, reason: str = "retraining") -> dict:
    return {"start": iso(start), "end": iso(end), "reason": reason}


def test_open_list_cancel_and_the_gauge(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    assert client.post("/v1/models", json=regression_model()).status_code == 201
    assert maintenance_gauge(client) == 0

    # a window in the past and one in the future leave the gauge at 0
    past = client.post("/v1/models/fraud/maintenance",
                       json=window(NOW - timedelta(hours=3), NOW - timedelta(hours=2)))
    assert past.status_code == 201, past.text
    assert past.json()["open"] is False
    future = client.post("/v1/models/fraud/maintenance",
                         json=window(NOW + timedelta(hours=2), NOW + timedelta(hours=3)))
    assert future.status_code == 201
    assert maintenance_gauge(client) == 0

    r = client.post("/v1/models/fraud/maintenance",
                    json=window(NOW - timedelta(minutes=5), NOW + timedelta(hours=1),
                                "retraining on November data"))
    assert r.status_code == 201
    opened = r.json()
    assert opened["open"] is True and opened["model"] == "fraud"
    assert opened["reason"] == "retraining on November data"
    assert datetime.fromisoformat(opened["start"]) == NOW - timedelta(minutes=5)
    assert maintenance_gauge(client) == 1
    assert maintenance_gauge(client, "eta") == 0  # another model is not in maintenance

    listed = client.get("/v1/models/fraud/maintenance").json()
    assert [w["id"] for w in listed] == [future.json()["id"], opened["id"], past.json()["id"]]
    assert client.get("/v1/models/eta/maintenance").json() == []

    # cancelling the open window closes it at the next scrape
    r = client.delete(f"/v1/models/fraud/maintenance/{opened['id']}")
    assert r.status_code == 200 and r.json()["id"] == opened["id"]
    assert maintenance_gauge(client) == 0
    assert len(client.get("/v1/models/fraud/maintenance").json()) == 2
    r = client.delete(f"/v1/models/fraud/maintenance/{opened['id']}")
    assert r.status_code == 404 and r.json()["code"] == "unknown_maintenance_window"
    # a window id of another model is not found under this one
    r = client.delete(f"/v1/models/eta/maintenance/{past.json()['id']}")
    assert r.status_code == 404


def test_an_offset_is_taken_into_account_and_no_offset_is_utc(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.post("/v1/models/fraud/maintenance", json={
        "start": (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S"),  # naive: UTC
        # NOW + 1 h on a clock two hours behind UTC: NOW + 3 h in UTC
        "end": (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S-02:00"),
        "reason": "r"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert datetime.fromisoformat(body["start"]) == NOW - timedelta(minutes=1)
    assert datetime.fromisoformat(body["end"]) == NOW + timedelta(hours=3)
    assert body["open"] is True


def test_a_version_registration_can_open_a_window(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.post("/v1/models/fraud/versions", json=version("v1", maintenance_seconds=3600))
    assert r.status_code == 201, r.text
    windows = client.get("/v1/models/fraud/maintenance").json()
    assert len(windows) == 1 and windows[0]["open"] is True
    assert windows[0]["reason"] == "version v1 registered"
    span = (datetime.fromisoformat(windows[0]["end"])
            - datetime.fromisoformat(windows[0]["start"]))
    assert span == timedelta(hours=1)
    assert maintenance_gauge(client) == 1
    # retrying the identical registration opens no second window
    r = client.post("/v1/models/fraud/versions", json=version("v1", maintenance_seconds=3600))
    assert r.status_code == 200
    assert len(client.get("/v1/models/fraud/maintenance").json()) == 1
    # without the field, none
    assert client.post("/v1/models/fraud/versions", json=version("v2")).status_code == 201
    assert len(client.get("/v1/models/fraud/maintenance").json()) == 1


@pytest.mark.parametrize(("body", "field"), [
    (window(NOW, NOW), "body"),
    (window(NOW, NOW - timedelta(hours=1)), "body"),
    (window(NOW, NOW + timedelta(days=32)), "body"),
    ({"start": iso(NOW), "end": iso(NOW + timedelta(hours=1))}, "reason"),
    (window(NOW, NOW + timedelta(hours=1), ""), "reason"),
    (window(NOW, NOW + timedelta(hours=1), "x" * 501), "reason"),
    ({**window(NOW, NOW + timedelta(hours=1)), "start": "yesterday"}, "start"),
    ({**window(NOW, NOW + timedelta(hours=1)), "extra": 1}, "extra"),
    ({**window(NOW, NOW + timedelta(hours=1)), "start": "0001-01-01T00:00:00+05:00"}, "body"),
    ({**window(NOW, NOW + timedelta(hours=1)), "reason": 5}, "reason"),
])
def test_bad_windows_are_422_naming_the_field(client, body, field):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.post("/v1/models/fraud/maintenance", json=body)
    assert r.status_code == 422, r.text
    fields = [d.get("field") for d in r.json()["details"]]
    assert (field in fields) if field != "body" else r.json()["details"], fields
    assert client.get("/v1/models/fraud/maintenance").json() == []


@pytest.mark.parametrize("seconds", [0, -1, 31 * 86400 + 1, "3600", True])
def test_bad_maintenance_seconds_are_422(client, seconds):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.post("/v1/models/fraud/versions", json=version("v1", maintenance_seconds=seconds))
    assert r.status_code == 422, r.text
    assert "maintenance_seconds" in [d.get("field") for d in r.json()["details"]]


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/models/fraud/maintenance/abc", 422),
    ("/v1/models/fraud/maintenance/0", 422),
    (f"/v1/models/fraud/maintenance/{2**63}", 422),
    (f"/v1/models/fraud/maintenance/{2**63 - 1}", 404),
    ("/v1/models/ghost/maintenance/1", 404),
])
def test_cancel_errors(client, path, status):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.delete(path)
    assert r.status_code == status, r.text
    assert r.json()["details"]


def test_unknown_model_is_404(client):
    r = client.post("/v1/models/ghost/maintenance",
                    json=window(NOW, NOW + timedelta(hours=1)))
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"
    assert client.get("/v1/models/ghost/maintenance").status_code == 404


class TestWithTokens:
    @pytest.fixture
    def settings(self, db_url: str) -> Settings:
        return Settings(database_url=db_url, auth="on", token_cache_seconds=0)

    def test_admin_opens_and_cancels_read_lists_and_both_are_audited(self, client, engine):
        admin, read = operator_and_viewer(client, engine, binary_model())
        body = window(NOW, NOW + timedelta(hours=1))
        assert client.post("/v1/models/fraud/maintenance", json=body,
                           headers=bearer(read)).status_code == 403
        r = client.post("/v1/models/fraud/maintenance", json=body, headers=bearer(admin))
        assert r.status_code == 201
        wid = r.json()["id"]
        assert len(client.get("/v1/models/fraud/maintenance",
                              headers=bearer(read)).json()) == 1
        assert client.delete(f"/v1/models/fraud/maintenance/{wid}",
                             headers=bearer(read)).status_code == 403
        assert client.delete(f"/v1/models/fraud/maintenance/{wid}",
                             headers=bearer(admin)).status_code == 200
        with engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
        assert [(r.action, r.token_name, r.status) for r in rows] == [
            ("model.register", "operator", 201), ("maintenance.open", "viewer", 403),
            ("maintenance.open", "operator", 201), ("maintenance.cancel", "viewer", 403),
            ("maintenance.cancel", "operator", 200)]
        assert rows[-1].target == f"/v1/models/fraud/maintenance/{wid}"
