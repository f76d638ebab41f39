"""Schema evolution over HTTP, on both stores: cohort keys can be added by PATCH (never
removed, renamed or reordered), and new predictions carry the new key at once; a version may
declare its own feature list, validated, profiled and monitored for that version."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import numpy as np
from sqlalchemy import select

from app.storage.tables import audit_log
from tests.factories import NOW, binary_model, iso, prediction, register
from tests.jobs_data import drift_model, feature_rows, latest_window, post_all, traffic


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


# ---------------------------------------------------------------- a version's own features

def _reference(rng: np.random.Generator, n: int, own: bool) -> bytes:
    """drift_model's reference CSV; for the version with its own list, with f_new (numeric,
    standard normal) and without the removed "channel"."""
    rows = feature_rows(rng, n)
    out = io.StringIO()
    cols = [c for c in rows[0] if not (own and c == "channel")] + (["f_new"] if own else [])
    w = csv.DictWriter(out, fieldnames=[*cols, "score"])
    w.writeheader()
    for r in rows:
        row = {c: r[c] for c in cols if c != "f_new"}
        if own:
            row["f_new"] = float(rng.normal())
        w.writerow({**row, "score": float(rng.beta(2, 5))})
    return out.getvalue().encode()


def test_a_version_with_an_added_feature_ingests_and_monitors_it(client):
    """v2 declares f_new (added) and drops channel (removed); v1 keeps the model's list. v2's
    predictions carry f_new, shifted far from its reference, and the drift report lists it
    for v2 (critical) and not for v1; channel is monitored for v1 only. Each version's
    records are validated against its own list."""
    rng = np.random.default_rng(4)
    model = drift_model("credit")
    own = [f for f in model["features"] if f["name"] != "channel"] + [
        {"name": "f_new", "type": "numeric"}]
    assert client.post("/v1/models", json=model).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    r = client.post("/v1/models/credit/versions", json={"version": "v2", "features": own})
    assert r.status_code == 201, r.text
    assert r.json()["features"] == own
    listed = {v["version"]: v["features"] for v in
              client.get("/v1/models/credit/versions").json()}
    assert listed == {"v1": None, "v2": own}
    for v, has_own in (("v1", False), ("v2", True)):
        r = client.post(f"/v1/models/credit/versions/{v}/reference",
                        content=_reference(rng, 2000, has_own),
                        headers={"content-type": "text/csv"})
        assert r.status_code == 201, r.text

    start, end = latest_window()
    v1, *_ = traffic(rng, 1500, start, end, version="v1", prefix="a")
    v2, *_ = traffic(rng, 1500, start, end, version="v2", prefix="b")
    for rec in v2:
        rec["features"].pop("channel")
        rec["features"]["f_new"] = float(rng.normal(3.0, 1.0))  # far from the reference
    post_all(client, "/v1/predictions", v1 + v2)

    # each version's records against its own list: f_new is v2's, channel v1's
    r = client.post("/v1/predictions", json={"records": [
        {**v1[0], "prediction_id": "x1", "features": {"f0": 1.0, "f_new": 1.0}},
        {**v2[0], "prediction_id": "x2", "features": {"f0": 1.0, "channel": "web"}},
        {**v2[0], "prediction_id": "x3", "features": {"f_new": "high"}}]})
    assert r.status_code == 422
    assert sorted((d["index"], d["field"]) for d in r.json()["details"]) == [
        (0, "features.f_new"), (1, "features.channel"), (2, "features.f_new")]

    rep = client.get("/v1/models/credit/reports/drift",
                     params={"start": iso(start), "end": iso(end)})
    assert rep.status_code == 200, rep.text
    by_version = {v["version"]: {f["feature"]: f for f in v["features"]}
                  for v in rep.json()["versions"]}
    assert "f_new" not in by_version["v1"] and "channel" in by_version["v1"]
    assert "f_new" in by_version["v2"] and "channel" not in by_version["v2"]
    assert by_version["v2"]["f_new"]["n_current"] == 1500
    assert by_version["v2"]["f_new"]["decision"] == "critical"
    assert by_version["v2"]["f_new"]["psi"] > 1.0
    # the shared features are monitored for both, on the same traffic law: not flagged
    assert by_version["v2"]["f0"]["decision"] == by_version["v1"]["f0"]["decision"] == "ok"
    # a per-feature policy may name the added feature; its override is what v2 applies
    assert client.patch("/v1/models/credit", json={"policy": {"features": {
        "ghost": {"psi_critical": 5.0}}}}).status_code == 422
    r = client.patch("/v1/models/credit", json={"policy": {"features": {
        "f_new": {"psi_warning": 4.0, "psi_critical": 5.0}}}})
    assert r.status_code == 200, r.text
    rep = client.get("/v1/models/credit/reports/drift",
                     params={"start": iso(start), "end": iso(end), "version": "v2"}).json()
    f_new = next(f for f in rep["versions"][0]["features"] if f["feature"] == "f_new")
    assert f_new["thresholds"]["psi_critical"] == 5.0
    # a weight file's feature axis follows the version's own list
    buf = io.BytesIO()
    np.savez(buf, coef=np.array([0.0] * (len(own) - 1) + [2.0]))
    r = client.post("/v1/models/credit/versions/v2/weights", content=buf.getvalue(),
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["features"]["nonzero"] == 1
    per_feature = {f["feature"]: f["l1"] for f in r.json()["features"]["features"]}
    assert list(per_feature) == [f["name"] for f in own]  # f_new last, no channel
    assert per_feature["f_new"] == 2.0 and sum(per_feature.values()) == 2.0


def test_version_features_keep_their_types_and_re_registration_compares_them(client):
    register(client)  # amount numeric, country categorical
    r = client.post("/v1/models/fraud/versions", json={
        "version": "v2", "features": [{"name": "amount", "type": "categorical"}]})
    assert r.status_code == 422
    assert [d["field"] for d in r.json()["details"]] == ["features.0.type"]
    own = [{"name": "amount", "type": "numeric"}, {"name": "zip", "type": "categorical"}]
    assert client.post("/v1/models/fraud/versions", json={"version": "v2", "features": own}
                       ).status_code == 201
    # another version may not give zip another type
    r = client.post("/v1/models/fraud/versions", json={
        "version": "v3", "features": [{"name": "zip", "type": "numeric"}]})
    assert r.status_code == 422 and "another version" in r.text
    r = client.post("/v1/models/fraud/versions", json={
        "version": "v3", "features": [{"name": "zip", "type": "categorical"},
                                      {"name": "zip", "type": "categorical"}]})
    assert r.status_code == 422 and "repeated: zip" in r.text
    # identical re-registration is a no-op; a different list a 409 naming features
    assert client.post("/v1/models/fraud/versions", json={"version": "v2", "features": own}
                       ).status_code == 200
    r = client.post("/v1/models/fraud/versions", json={"version": "v2", "features": own[:1]})
    assert r.status_code == 409 and [d["field"] for d in r.json()["details"]] == ["features"]
    r = client.post("/v1/models/fraud/versions", json={"version": "v2"})
    assert r.status_code == 409
