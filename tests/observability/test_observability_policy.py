"""/metrics exports each model's alerting policy, which the alert rules read: the expected
interval (absent for a batch model), whether critical findings page, and whether a
maintenance window is open, all from the database (the same from every replica)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.api.test_metrics import scrape
from tests.factories import binary_model, regression_model


@pytest.fixture
def settings(db_url: str, request: pytest.FixtureRequest) -> Settings:
    return Settings(database_url=db_url, metrics_cache_seconds=0,
                    **getattr(request, "param", {}))


def gauge(s: dict, name: str, model: str) -> float | None:
    return s.get((name, (("model", model),)))


def test_policy_gauges_follow_each_models_policy(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    assert client.post("/v1/models", json=regression_model(policy={
        "expected_interval_seconds": None, "page": False})).status_code == 201
    assert client.post("/v1/models", json=binary_model("pricing", policy={
        "expected_interval_seconds": 600})).status_code == 201
    s = scrape(client)
    assert gauge(s, "modelmon_model_expected_interval_seconds", "fraud") == 1800  # default
    assert gauge(s, "modelmon_model_expected_interval_seconds", "pricing") == 600
    assert ("modelmon_model_expected_interval_seconds", (("model", "eta"),)) not in s  # batch
    assert gauge(s, "modelmon_model_paging", "fraud") == 1
    assert gauge(s, "modelmon_model_paging", "eta") == 0
    assert gauge(s, "modelmon_model_maintenance", "fraud") == 0
    assert gauge(s, "modelmon_model_unused_feature_paging", "fraud") == 0  # default: ticket

    # a PATCH changes what the next scrape exports
    assert client.patch("/v1/models/fraud", json={"policy": {
        "page": False, "expected_interval_seconds": None,
        "page_unused_features": True}}).status_code == 200
    s = scrape(client)
    assert gauge(s, "modelmon_model_paging", "fraud") == 0
    assert gauge(s, "modelmon_model_unused_feature_paging", "fraud") == 1
    assert ("modelmon_model_expected_interval_seconds", (("model", "fraud"),)) not in s


@pytest.mark.parametrize("settings", [{"page": False, "expected_interval_seconds": None,
                                       "page_unused_features": True}], indirect=True)
def test_the_settings_are_the_defaults(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    assert client.post("/v1/models", json=binary_model("pricing", policy={
        "expected_interval_seconds": 600, "page": True})).status_code == 201
    s = scrape(client)
    assert gauge(s, "modelmon_model_paging", "fraud") == 0
    assert gauge(s, "modelmon_model_unused_feature_paging", "fraud") == 1
    assert ("modelmon_model_expected_interval_seconds", (("model", "fraud"),)) not in s
    assert gauge(s, "modelmon_model_paging", "pricing") == 1
    assert gauge(s, "modelmon_model_expected_interval_seconds", "pricing") == 600


def test_every_replica_exports_the_same_policy(client, settings):
    assert client.post("/v1/models", json=binary_model(policy={"page": False})).status_code \
        == 201
    other = create_app(settings)  # a second replica on the same database
    try:
        with TestClient(other) as c2:
            a, b = scrape(client), scrape(c2)
        for name in ("modelmon_model_paging", "modelmon_model_expected_interval_seconds",
                     "modelmon_model_maintenance"):
            assert gauge(a, name, "fraud") == gauge(b, name, "fraud") is not None
    finally:
        other.state.engine.dispose()
