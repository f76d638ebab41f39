"""The per-model unknown-feature policy over HTTP, on both stores: ``reject`` (the default)
refuses a batch carrying a feature the model does not declare, naming it; ``record`` stores
the undeclared values with the record, counts them, and monitors nothing new."""

from __future__ import annotations

import json

import numpy as np

from tests.api.test_metrics import sample
from tests.factories import binary_model, iso, prediction, register
from tests.helpers import stored, stored_predictions
from tests.jobs_data import drift_model, latest_window, post_all, reference_csv, traffic

UNEXPECTED = "modelmon_ingest_unexpected_features_total"


def _features(row) -> dict:
    f = row.features
    return json.loads(f) if isinstance(f, str) else f


def test_reject_is_the_default_and_names_the_undeclared_feature(app, client, engine):
    register(client)
    r = client.post("/v1/predictions", json={"records": [
        prediction(0), prediction(1, features={"amount": 3.0, "zip": "10115"})]})
    assert r.status_code == 422, r.text
    assert [(d["index"], d["field"]) for d in r.json()["details"]] == [(1, "features.zip")]
    assert stored(engine)["predictions"] == 0  # nothing half-written
    assert sample(app, UNEXPECTED, {"model": "fraud"}) is None


def test_record_stores_the_undeclared_values_and_counts_them(app, client, engine):
    register(client, binary_model(policy={"unknown_features": "record"}))
    got = client.get("/v1/models/fraud").json()["policy"]
    assert got["effective"]["unknown_features"] == "record"
    batch = [prediction(0, features={"amount": 3.0, "country": "DE", "zip": "10115",
                                     "age": 41, "gone": None}),
             prediction(1),
             prediction(2, features={"amount": 4.0, "zip": "80331"})]
    r = client.post("/v1/predictions", json={"records": batch})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    rows = {p.prediction_id: _features(p) for p in stored_predictions(engine)}
    # with the record for drill-down and later declaration; a null is stored as absent
    assert rows["p-0"] == {"amount": 3.0, "country": "DE", "zip": "10115", "age": 41.0}
    assert rows["p-1"] == {"amount": 11.0, "country": "DE"}
    assert rows["p-2"] == {"amount": 4.0, "zip": "80331"}
    assert sample(app, UNEXPECTED, {"model": "fraud"}) == 3  # zip, age; zip
    # a resent batch is all duplicates: nothing stored again, nothing counted again
    r = client.post("/v1/predictions", json={"records": batch})
    assert r.json()["duplicates"] == 3
    assert sample(app, UNEXPECTED, {"model": "fraud"}) == 3


def test_record_still_refuses_what_it_could_not_store(app, client, engine):
    """An undeclared value must be a scalar a feature could hold, under a name a feature can
    be declared with; anything else is a 422 naming it, and the batch is not stored. A
    declared feature keeps its type check."""
    register(client, binary_model(policy={"unknown_features": "record"}))
    r = client.post("/v1/predictions", json={"records": [
        prediction(0, features={"zip": [1, 2]}),
        prediction(1, features={"bad\tname": 1}),
        prediction(2, features={"flag": True}),
        prediction(3, features={"note": ""}),
        prediction(4, features={"amount": "lots", "zip": "10115"}),
        prediction(5, features={"zip": "10115"})]})
    assert r.status_code == 422, r.text
    assert sorted((d["index"], d["field"]) for d in r.json()["details"]) == [
        (0, "features.zip"), (1, "features.bad\tname"), (2, "features.flag"),
        (3, "features.note"), (4, "features.amount")]
    assert "number or a string" in r.json()["details"][0]["problem"]
    assert stored(engine)["predictions"] == 0
    assert sample(app, UNEXPECTED, {"model": "fraud"}) is None


def test_the_policy_can_be_switched_by_patch_and_applies_at_once(client, engine):
    register(client)
    extra = {"records": [prediction(0, features={"amount": 1.0, "zip": "10115"})]}
    assert client.post("/v1/predictions", json=extra).status_code == 422
    r = client.patch("/v1/models/fraud", json={"policy": {"unknown_features": "record"}})
    assert r.status_code == 200, r.text
    assert client.post("/v1/predictions", json=extra).status_code == 200
    assert client.patch("/v1/models/fraud", json={"policy": {}}).status_code == 200
    r = client.post("/v1/predictions", json={"records": [
        prediction(1, features={"amount": 1.0, "zip": "10115"})]})
    assert r.status_code == 422
    assert stored(engine)["predictions"] == 1


def test_a_bad_policy_value_is_a_422_naming_it(client):
    r = client.post("/v1/models", json=binary_model(policy={"unknown_features": "keep"}))
    assert r.status_code == 422
    assert any(d["field"].endswith("unknown_features") for d in r.json()["details"]), r.text


def test_recorded_features_leave_drift_and_summaries_unchanged(client):
    """Two models with the same schema, reference and traffic; one's records also carry
    undeclared features under ``record``. Their drift reports are the same, feature by
    feature: the undeclared ones are not monitored."""
    start, end = latest_window()
    reports = {}
    for name, policy in (("plain", None), ("extras", {"unknown_features": "record"})):
        rng = np.random.default_rng(5)
        body = drift_model(name)
        if policy:
            body["policy"] = policy
        assert client.post("/v1/models", json=body).status_code == 201
        assert client.post(f"/v1/models/{name}/versions", json={"version": "v1"}
                           ).status_code == 201
        r = client.post(f"/v1/models/{name}/versions/v1/reference",
                        content=reference_csv(rng, 2000), headers={"content-type": "text/csv"})
        assert r.status_code == 201, r.text
        records, *_ = traffic(rng, 1500, start, end, model=name)
        if policy:
            for i, rec in enumerate(records):
                rec["features"] = {**rec["features"], "f0_v2": float(i % 7) * 10,
                                   "channel_v2": "kiosk"}
        post_all(client, "/v1/predictions", records)
        rep = client.get(f"/v1/models/{name}/reports/drift",
                         params={"start": iso(start), "end": iso(end)})
        assert rep.status_code == 200, rep.text
        versions = rep.json()["versions"]
        for v in versions:
            v["reference"].pop("created_at")  # registered a moment apart
        reports[name] = versions
    assert reports["extras"] == reports["plain"]
    names = {f["feature"] for f in reports["extras"][0]["features"]}
    assert "f0_v2" not in names and "channel_v2" not in names and "f0" in names
