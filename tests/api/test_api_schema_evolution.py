"""Schema evolution over HTTP, on both stores: cohort keys can be added by PATCH (never
removed, renamed or reordered), and new predictions carry the new key at once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.storage.tables import audit_log
from tests.factories import NOW, binary_model, iso, prediction, register


def _labeled(i: int, **cohorts: str) -> dict:
    return prediction(i, cohorts=cohorts, label="fraud" if i % 3 == 0 else "legit",
                      prediction={"score": 0.2 + 0.05 * (i % 10)})


def test_a_cohort_key_added_by_patch_is_carried_by_new_predictions(client, engine):
    register(client)
    old = [_labeled(i, region="eu" if i % 2 else "us") for i in range(10)]
    assert client.post("/v1/predictions", json={"records": old}).status_code == 200
    # before the key is added, it is an unknown cohort key (the ingest schema cache is warm)
    early = client.post("/v1/predictions", json={"records": [_labeled(99, device="ios")]})
    assert early.status_code == 422
    assert early.json()["details"][0]["field"] == "cohorts.device"

    r = client.patch("/v1/models/fraud", json={"cohort_keys": ["region", "device"]})
    assert r.status_code == 200, r.text
    assert r.json()["cohort_keys"] == ["region", "device"]
    assert r.json()["policy"]["overrides"] == {}  # policy not sent: unchanged
    assert client.get("/v1/models/fraud").json()["cohort_keys"] == ["region", "device"]

    new = [_labeled(i, region="eu", device="ios" if i % 2 else "android")
           for i in range(10, 16)]
    r = client.post("/v1/predictions", json={"records": new})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 6

    rep = client.get("/v1/models/fraud/reports/cohorts", params={
        "start": iso(NOW - timedelta(hours=1)), "end": iso(NOW + timedelta(minutes=1))})
    assert rep.status_code == 200, rep.text
    keys = rep.json()["versions"][0]["cohort_keys"]
    assert sum(c["n"] for c in keys["region"]["cohorts"]) == 16
    # the old predictions simply lack the new key: it holds the new ones only
    device = {c["cohort"]: c["n"] for c in keys["device"]["cohorts"]}
    assert device == {"ios": 3, "android": 3}
    with engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log.c.action))]
    assert "model.update" in actions


def test_removing_renaming_or_reordering_cohort_keys_is_a_409_that_changes_nothing(client):
    register(client, binary_model(cohort_keys=["region", "tier"]))
    for sent, why in ((["region"], "missing"), (["region", "plan"], "missing"),
                      (["tier", "region"], "beginning"),
                      (["device", "region", "tier"], "beginning")):
        r = client.patch("/v1/models/fraud", json={"cohort_keys": sent})
        assert r.status_code == 409, (sent, r.text)
        body = r.json()
        assert body["code"] == "cohort_keys_changed"
        assert "can only be added" in body["message"]
        assert all(d["field"] == "cohort_keys" for d in body["details"])
        assert why in body["details"][0]["problem"]
    assert client.get("/v1/models/fraud").json()["cohort_keys"] == ["region", "tier"]
    # the same list is a no-op
    r = client.patch("/v1/models/fraud", json={"cohort_keys": ["region", "tier"]})
    assert r.status_code == 200 and r.json()["cohort_keys"] == ["region", "tier"]


def test_bad_patches_are_422s_naming_the_field_and_nothing_is_half_written(client):
    register(client)
    r = client.patch("/v1/models/fraud", json={})
    assert r.status_code == 422 and "nothing to change" in r.text
    assert [d["field"] for d in r.json()["details"]] == ["policy", "cohort_keys"]
    r = client.patch("/v1/models/fraud", json={"cohort_keys": ["region", "x", "x"]})
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == ["cohort_keys.x"]
    r = client.patch("/v1/models/fraud", json={"cohort_keys": ["region", "bad key"]})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"].startswith("cohort_keys")
    # a policy naming a key that is neither current nor added: refused, and the key sent
    # with it is not added either
    r = client.patch("/v1/models/fraud", json={
        "cohort_keys": ["region", "device"],
        "policy": {"cohort_keys": {"plan": {"cohort_min_n": 50}}}})
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == ["policy.cohort_keys.plan"]
    assert client.get("/v1/models/fraud").json()["cohort_keys"] == ["region"]
    # a policy may override a key added in the same request
    r = client.patch("/v1/models/fraud", json={
        "cohort_keys": ["region", "device"],
        "policy": {"cohort_keys": {"device": {"cohort_min_n": 50}}}})
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["effective"]["cohort_keys"]["device"]["cohort_min_n"] == 50
    assert client.patch("/v1/models/ghost", json={"cohort_keys": ["a"]}).status_code == 404


def test_re_registration_must_send_the_extended_keys(client):
    """The registered definition is the extended one: a pipeline re-registering with the old
    list conflicts (409 naming cohort_keys), with the new one is a no-op."""
    register(client)
    assert client.patch("/v1/models/fraud", json={"cohort_keys": ["region", "device"]}
                        ).status_code == 200
    r = client.post("/v1/models", json=binary_model())
    assert r.status_code == 409
    assert [d["field"] for d in r.json()["details"]] == ["cohort_keys"]
    r = client.post("/v1/models", json=binary_model(cohort_keys=["region", "device"]))
    assert r.status_code == 200, r.text
