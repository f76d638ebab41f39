"""A model's policy over HTTP, on both stores: set at registration, read back with its
effective values, replaced by PATCH (admin, audited), and every bad policy a 4xx naming the
field path, never a 5xx."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.evaluation import policy as model_policy
from app.settings import Settings
from app.storage.tables import audit_log
from tests.api.test_api_auth import bearer, operator_and_viewer
from tests.factories import binary_model

POLICY = {"psi_critical": 0.05, "expected_interval_seconds": None, "page": False,
          "features": {"amount": {"psi_warning": 0.02}},
          "cohort_keys": {"region": {"cohort_min_n": 500}}}


def test_policy_at_registration_is_read_back_with_effective_values(client, settings):
    r = client.post("/v1/models", json=binary_model(policy=POLICY))
    assert r.status_code == 201, r.text
    got = client.get("/v1/models/fraud").json()["policy"]
    assert got["overrides"] == POLICY
    eff = got["effective"]
    assert eff["psi_critical"] == 0.05
    assert eff["psi_warning"] == settings.threshold_psi_warning  # not overridden: the default
    assert eff["expected_interval_seconds"] is None and eff["page"] is False
    assert eff["label_lag_seconds"] == settings.label_lag_seconds
    # a per-feature override on top of the model's: its own field, the model's others
    assert eff["features"]["amount"]["psi_warning"] == 0.02
    assert eff["features"]["amount"]["psi_critical"] == 0.05
    assert eff["cohort_keys"]["region"] == {
        "cohort_ratio_critical": settings.threshold_cohort_ratio_critical,
        "cohort_min_n": 500}


def test_without_policy_every_knob_is_the_default(client, settings):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    got = client.get("/v1/models/fraud").json()["policy"]
    assert got["overrides"] == {}
    eff = got["effective"]
    assert eff["expected_interval_seconds"] == settings.expected_interval_seconds == 1800
    assert eff["page"] is True
    assert eff["page_unused_features"] is False
    assert eff["unknown_features"] == "reject"
    for name, value in eff.items():
        if name not in ("features", "cohort_keys"):
            assert value == getattr(settings, model_policy.setting_of(name)), name


@pytest.mark.parametrize("settings", [{"threshold_psi_critical": 0.3, "page": False,
                                       "expected_interval_seconds": 600}], indirect=True)
def test_defaults_follow_the_settings(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    eff = client.get("/v1/models/fraud").json()["policy"]["effective"]
    assert (eff["psi_critical"], eff["page"], eff["expected_interval_seconds"]) == (
        0.3, False, 600)


def test_reregistration_identical_is_a_noop_and_a_different_policy_conflicts(client):
    assert client.post("/v1/models", json=binary_model(policy=POLICY)).status_code == 201
    assert client.post("/v1/models", json=binary_model(policy=POLICY)).status_code == 200
    # omitted: the stored policy stands (a pipeline re-registering does not reset it)
    r = client.post("/v1/models", json=binary_model())
    assert r.status_code == 200 and r.json()["policy"]["overrides"] == POLICY
    r = client.post("/v1/models", json=binary_model(policy={**POLICY, "psi_critical": 0.2}))
    assert r.status_code == 409
    assert r.json()["code"] == "conflict"
    assert [d["field"] for d in r.json()["details"]] == ["policy"]
    assert client.get("/v1/models/fraud").json()["policy"]["overrides"] == POLICY


def test_patch_replaces_the_policy(client):
    assert client.post("/v1/models", json=binary_model(policy=POLICY)).status_code == 201
    r = client.patch("/v1/models/fraud", json={"policy": {"psi_warning": 0.05}})
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["overrides"] == {"psi_warning": 0.05}
    got = client.get("/v1/models/fraud").json()
    assert got["policy"]["overrides"] == {"psi_warning": 0.05}
    assert got["policy"]["effective"]["page"] is True  # back to the default
    assert got["features"] == binary_model()["features"]  # nothing else changed
    # after a PATCH, the new policy is what an identical registration must send
    assert client.post("/v1/models", json=binary_model(
        policy={"psi_warning": 0.05})).status_code == 200
    # {} clears every override
    r = client.patch("/v1/models/fraud", json={"policy": {}})
    assert r.status_code == 200 and r.json()["policy"]["overrides"] == {}


BAD = [
    ({"nope": 1}, "policy.nope"),
    ({"psi_warning": "0.1"}, "policy.psi_warning"),
    ({"page": 1}, "policy.page"),
    ({"min_n": 10.5}, "policy.min_n"),
    ({"psi_warning": -0.1}, "policy.psi_warning"),
    ({"psi_warning": None}, "policy.psi_warning"),  # only nullable knobs take null
    ({"ks_d": 1.5}, "policy.ks_d"),
    ({"ece_warning": 0}, "policy.ece_warning"),  # no window could ever decide against 0
    ({"expected_interval_seconds": 0}, "policy.expected_interval_seconds"),
    ({"label_lag_seconds": -1}, "policy.label_lag_seconds"),
    ({"features": {"amount": {"alpha_warning": 0.1}}}, "policy.features.amount.alpha_warning"),
    ({"features": {"amount": {"psi_critical": -1}}}, "policy.features.amount.psi_critical"),
    ({"features": {"nosuch": {"psi_warning": 0.1}}}, "policy.features.nosuch"),
    ({"cohort_keys": {"nosuch": {"cohort_min_n": 10}}}, "policy.cohort_keys.nosuch"),
    ({"cohort_keys": {"region": {"psi_warning": 0.1}}}, "policy.cohort_keys.region.psi_warning"),
    ({"psi_warning": 0.5}, "policy.psi_warning"),  # above the default critical line 0.15
    ({"features": {"amount": {"psi_critical": 0.01}}}, "policy.features.amount.psi_warning"),
    ({"ece_warning": 0.2, "ece_critical": 0.1}, "policy.ece_warning"),
    ("strict", "policy"),
]


@pytest.mark.parametrize(("policy", "field"), BAD, ids=[f for _, f in BAD])
def test_a_bad_policy_is_422_naming_its_field_on_post_and_patch(client, policy, field):
    r = client.post("/v1/models", json=binary_model(policy=policy))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "validation_error"
    assert field in [d["field"] for d in body["details"]], body
    assert client.get("/v1/models/fraud").status_code == 404  # nothing stored

    assert client.post("/v1/models", json=binary_model(policy=POLICY)).status_code == 201
    r = client.patch("/v1/models/fraud", json={"policy": policy})
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["details"]], r.json()
    assert client.get("/v1/models/fraud").json()["policy"]["overrides"] == POLICY


@pytest.mark.parametrize(("body", "status", "field"), [
    ({}, 422, "policy"),
    ({"policy": {}, "task": "regression"}, 422, "task"),
    ([], 422, None),
])
def test_patch_body_errors(client, body, status, field):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.patch("/v1/models/fraud", json=body)
    assert r.status_code == status, r.text
    if field is not None:
        assert field in [d.get("field") for d in r.json()["details"]]


def test_patch_of_an_unknown_model_is_404(client):
    r = client.patch("/v1/models/nosuch", json={"policy": {}})
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"


def test_patch_with_a_non_json_body_is_4xx(client):
    assert client.post("/v1/models", json=binary_model()).status_code == 201
    r = client.patch("/v1/models/fraud", content=b"{not json",
                     headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and "code" in r.json()


class TestWithTokens:
    @pytest.fixture
    def settings(self, db_url: str) -> Settings:
        return Settings(database_url=db_url, auth="on", token_cache_seconds=0)

    def test_patch_needs_admin_and_is_audited(self, client, engine):
        admin, read = operator_and_viewer(client, engine, binary_model())
        r = client.patch("/v1/models/fraud", json={"policy": {"page": False}},
                         headers=bearer(read))
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        r = client.patch("/v1/models/fraud", json={"policy": {"page": False}},
                         headers=bearer(admin))
        assert r.status_code == 200
        assert client.get("/v1/models/fraud", headers=bearer(read)).json()[
            "policy"]["effective"]["page"] is False
        with engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
        assert [(r.action, r.token_name, r.status) for r in rows] == [
            ("model.register", "operator", 201), ("model.update", "viewer", 403),
            ("model.update", "operator", 200)]


EXTREMES = [
    {"alpha_warning": 1e-300, "alpha_critical": 1e-300, "ks_alpha": 1e-300},
    {"alpha_warning": 0.999999, "alpha_critical": 0.999999, "ks_alpha": 0.999999},
    {"min_n": 10**18, "cohort_min_n": 10**18, "calibration_bins": 100},
    {"min_n": 1, "cohort_min_n": 1, "calibration_bins": 2, "psi_moderate": 0.0,
     "psi_warning": 0.0, "psi_critical": 0.0, "ks_d": 0.0, "ece_warning": 1e-300,
     "ece_critical": 1e-300, "coverage_warning": 1.0},
    {"psi_moderate": 1e308, "psi_major": 1e308, "psi_warning": 1e308, "psi_critical": 1e308,
     "cohort_ratio_critical": 1e308, "missing_rise": 1.0},
]


@pytest.mark.parametrize("extreme", EXTREMES, ids=range(len(EXTREMES)))
def test_extreme_policies_never_make_a_report_or_a_job_fail(client, engine, settings, extreme):
    """Any policy the validation admits decides: the reports answer and the jobs succeed."""
    from datetime import UTC, datetime

    import numpy as np

    from app.jobs import runner
    from tests.factories import iso
    from tests.jobs_data import drift_model, labels_for, latest_window, post_all, traffic

    rng = np.random.default_rng(4)
    assert client.post("/v1/models", json={**drift_model(), "policy": extreme}).status_code \
        == 201, extreme
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    start, end = latest_window()
    records, _, y, _ = traffic(rng, 600, start, end)
    post_all(client, "/v1/predictions", records)
    post_all(client, "/v1/labels", labels_for(records, y))
    params = {"start": iso(start), "end": iso(end)}
    for report in ("drift", "calibration", "cohorts"):
        r = client.get(f"/v1/models/credit/reports/{report}", params=params)
        assert r.status_code == 200, (report, r.text)
    assert end <= datetime.now(UTC)
    counts = runner.tick(engine, settings, now=end)
    assert counts.get("failure", 0) == 0, counts
