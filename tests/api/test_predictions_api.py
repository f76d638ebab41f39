"""POST /v1/predictions: atomic batches, idempotent records, every bad input a clear 4xx."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx2
import pytest
from sqlalchemy import text

from tests.factories import (
    NOW,
    iso,
    label,
    multiclass_model,
    prediction,
    register,
    regression_model,
)
from tests.helpers import stored, stored_predictions


def post_raw(client, raw: bytes):
    return client.post("/v1/predictions", content=raw,
                       headers={"content-type": "application/json"})


def test_binary_batch_is_stored_with_every_field(client, engine):
    register(client)
    rec = prediction(0, latency_ms=4.5, label="fraud",
                     prediction={"score": 0.875, "label": "fraud"},
                     features={"amount": 12, "country": None})
    r = client.post("/v1/predictions", json={"records": [rec, prediction(1)]})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "duplicates": 0}
    rows = stored_predictions(engine)
    assert [row.prediction_id for row in rows] == ["p-0", "p-1"]
    first = rows[0]
    assert first.score == 0.875 and first.predicted_label == "fraud"
    assert first.features == {"amount": 12.0}  # null stored as missing
    assert first.cohorts == {"region": "eu"}
    assert first.latency_ms == 4.5
    assert stored(engine)["labels"] == 1  # the inline ground truth


def test_multiclass_and_regression_batches(client, engine):
    register(client, multiclass_model())
    register(client, regression_model())
    recs = [
        prediction(0, model="species", features={"petal": 1.2}, cohorts={},
                   prediction={"probabilities": {"setosa": 0.7, "versicolor": 0.2,
                                                 "virginica": 0.1}, "label": "setosa"}),
        prediction(1, model="species", features={"petal": 1.2}, cohorts={},
                   prediction={"probabilities": {"setosa": 0.9995, "virginica": 0.0}}),
        prediction(0, model="eta", features={"distance": 3.0}, cohorts={"city": "oslo"},
                   prediction={"value": 17.5}, label=18.25),
    ]
    r = client.post("/v1/predictions", json={"records": recs})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicates": 0}
    rows = {(row.model_id, row.prediction_id): row for row in stored_predictions(engine)}
    assert len(rows) == 3
    values = sorted(row.value for row in rows.values() if row.value is not None)
    assert values == [17.5]
    probs = [row.probabilities for row in rows.values() if row.probabilities]
    assert {"setosa": 0.7, "versicolor": 0.2, "virginica": 0.1} in probs


def test_one_bad_record_in_a_thousand_stores_nothing(client, engine):
    register(client)
    recs = [prediction(i) for i in range(1000)]
    recs[637]["prediction"] = {"score": 1.5}
    r = client.post("/v1/predictions", json={"records": recs})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert body["details"] == [{"index": 637, "field": "prediction.score",
                                "problem": "probability must be within [0, 1]"}]
    assert stored(engine) == {"predictions": 0, "prediction_keys": 0, "labels": 0}


def test_every_bad_record_is_listed(client, engine):
    register(client)
    recs = [prediction(i) for i in range(10)]
    recs[2]["features"]["amount"] = "ten"
    recs[5]["cohorts"] = {"planet": "mars"}
    recs[9]["timestamp"] = "yesterday"
    r = client.post("/v1/predictions", json={"records": recs})
    assert r.status_code == 422
    found = [(d["index"], d["field"]) for d in r.json()["details"]]
    assert found == [(2, "features.amount"), (5, "cohorts.planet"), (9, "timestamp")]
    assert stored(engine)["predictions"] == 0


def test_same_batch_twice_is_stored_once(client, engine):
    register(client)
    batch = {"records": [prediction(i) for i in range(50)]}
    assert client.post("/v1/predictions", json=batch).json() == {"accepted": 50, "duplicates": 0}
    assert client.post("/v1/predictions", json=batch).json() == {"accepted": 0, "duplicates": 50}
    extended = {"records": batch["records"] + [prediction(i) for i in range(50, 60)]}
    assert client.post("/v1/predictions", json=extended).json() == {"accepted": 10,
                                                                    "duplicates": 50}
    assert stored(engine)["predictions"] == 60


def test_a_batch_mixing_stored_and_new_keys_stores_the_new_ones_and_pairs_their_labels(
        client, engine):
    # Postgres claims keys first as if all were new; a stored key fails that attempt, and
    # the batch is stored again with ON CONFLICT: nothing of the first attempt may remain.
    register(client)
    assert client.post("/v1/labels", json={"records": [label(7)]}).status_code == 200
    assert client.post("/v1/predictions", json={
        "records": [prediction(i) for i in range(5)]}).json() == {"accepted": 5,
                                                                  "duplicates": 0}
    mixed = {"records": [prediction(i) for i in range(3, 9)]}  # 3, 4 stored; 7 has a label
    assert client.post("/v1/predictions", json=mixed).json() == {"accepted": 4,
                                                                 "duplicates": 2}
    assert stored(engine) == {"predictions": 9, "prediction_keys": 9, "labels": 1}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT coalesce(sum(n), 0) FROM pending_labels")).scalar() == 0
    report = client.get("/v1/models/fraud/reports/calibration",
                        params={"start": iso(NOW - timedelta(hours=1)),
                                "end": iso(NOW + timedelta(hours=1))})
    assert report.status_code == 200, report.text
    # the summaries count each prediction and the paired label once (not the failed attempt)
    (v1,) = report.json()["versions"]
    assert (v1["predictions"], v1["n"]) == (9, 1)


def test_new_keys_are_stored_alike_whether_copied_in_or_claimed_with_a_waiting_label(
        client, engine):
    # Postgres copies a batch of new keys straight into the tables when no label waits for
    # its models, and otherwise claims through the staging table, which pairs the label.
    register(client)

    def batch(base: int) -> dict:
        return {"records": [prediction(
            base + i, latency_ms=1.5 + i, prediction={"score": 0.5 + i / 8, "label": "fraud"},
            features={"amount": 1.0 + i, "country": "FR" if i else None},
            cohorts={"region": "eu"} if i else {}) for i in range(3)]}

    assert client.post("/v1/predictions", json=batch(0)).json() == {"accepted": 3,
                                                                    "duplicates": 0}
    assert client.post("/v1/labels", json={"records": [label(12)]}).json()["pending"] == 1
    assert client.post("/v1/predictions", json=batch(10)).json() == {"accepted": 3,
                                                                     "duplicates": 0}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT coalesce(sum(n), 0) FROM pending_labels")).scalar() == 0
    rows = {r.prediction_id: r for r in stored_predictions(engine)}
    assert len(rows) == 6 and stored(engine)["prediction_keys"] == 6
    columns = ("version_id", "features", "cohorts", "score", "value", "probabilities",
               "predicted_label", "latency_ms")
    for i in range(3):
        a, b = rows[f"p-{i}"], rows[f"p-{10 + i}"]
        assert [getattr(a, c) for c in columns] == [getattr(b, c) for c in columns]
        assert a.ts - b.ts == timedelta(seconds=10)
    assert rows["p-0"].features == {"amount": 1.0} and rows["p-0"].cohorts == {}
    report = client.get("/v1/models/fraud/reports/calibration",
                        params={"start": iso(NOW - timedelta(hours=1)),
                                "end": iso(NOW + timedelta(hours=1))})
    (v1,) = report.json()["versions"]
    assert (v1["predictions"], v1["n"]) == (6, 1)  # the waiting label paired, once


def test_repeat_within_a_batch_counts_as_duplicate(client, engine):
    register(client)
    recs = [prediction(0), prediction(1), prediction(0)]
    assert client.post("/v1/predictions", json={"records": recs}).json() == {
        "accepted": 2, "duplicates": 1}
    assert stored(engine)["predictions"] == 2


def test_concurrent_identical_batches_store_each_record_once(live_server, client, engine):
    register(client)
    batch = {"records": [prediction(i) for i in range(500)]}

    def send(_: int) -> dict:
        with httpx2.Client(base_url=live_server.url, timeout=60) as c:
            r = c.post("/v1/predictions", json=batch)
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(send, range(4)))
    assert sum(r["accepted"] for r in results) == 500
    assert sum(r["duplicates"] for r in results) == 1500
    assert stored(engine)["predictions"] == 500
    assert stored(engine)["prediction_keys"] == 500


def test_unknown_model_or_version_is_404_and_nothing_stored(client, engine):
    register(client)
    r = client.post("/v1/predictions", json={"records": [prediction(0), prediction(1, model="x")]})
    assert r.status_code == 404
    assert r.json()["details"] == [{"index": 1, "field": "model",
                                    "problem": "unknown model; register it with POST /v1/models"}]
    r = client.post("/v1/predictions", json={"records": [prediction(0), prediction(1, ver="v9")]})
    assert r.status_code == 404
    assert r.json()["details"][0]["field"] == "version"
    assert stored(engine)["predictions"] == 0


FUTURE = iso(NOW + timedelta(days=2))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"features": {"amount": 1.0, "colour": "red"}}, "features.colour"),
        ({"features": {"amount": "1.0"}}, "features.amount"),
        ({"features": {"amount": True}}, "features.amount"),
        ({"features": {"country": 1.5}}, "features.country"),
        ({"features": {"country": ["DE"]}}, "features.country"),
        ({"features": ["amount"]}, "features"),
        ({"cohorts": {"device": "ios"}}, "cohorts.device"),
        ({"cohorts": {"region": {"x": 1}}}, "cohorts.region"),
        ({"prediction": {"score": -0.01}}, "prediction.score"),
        ({"prediction": {"score": "0.5"}}, "prediction.score"),
        ({"prediction": {"value": 0.5}}, "prediction.value"),
        ({"prediction": {"score": 0.5, "label": "maybe"}}, "prediction.label"),
        ({"prediction": {"score": 0.5, "extra": 1}}, "prediction.extra"),
        ({"prediction": 0.5}, "prediction"),
        ({"label": "maybe"}, "label"),
        ({"label": 1.0}, "label"),
        ({"timestamp": "23/11/2026 10:00"}, "timestamp"),
        ({"timestamp": 1763892000}, "timestamp"),
        ({"timestamp": FUTURE}, "timestamp"),
        ({"timestamp": "1990-01-01T00:00:00Z"}, "timestamp"),
        ({"prediction_id": ""}, "prediction_id"),
        ({"prediction_id": 17}, "prediction_id"),
        ({"prediction_id": "x" * 201}, "prediction_id"),
        ({"prediction_id": "a\u0000b"}, "prediction_id"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": 1e300}, "latency_ms"),
        ({"surprise": 1}, "surprise"),
        ({"version": None}, "version"),
    ],
)
def test_each_bad_input_is_422_naming_index_and_field(client, engine, change, field):
    register(client)
    bad = prediction(1)
    bad.update(change)
    r = client.post("/v1/predictions", json={"records": [prediction(0), bad]})
    assert r.status_code == 422, r.text
    details = r.json()["details"]
    assert {"index": 1, "field": field} in [{"index": d.get("index"), "field": d.get("field")}
                                            for d in details], details
    assert stored(engine)["predictions"] == 0


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999",
                                   "1" + "0" * 400])
@pytest.mark.parametrize("where", ["features.amount", "prediction.score", "latency_ms"])
def test_non_finite_numbers_are_422_and_never_echoed(client, engine, token, where):
    register(client)
    rec = prediction(0)
    marker = "__TOKEN__"
    if where == "features.amount":
        rec["features"]["amount"] = marker
    elif where == "prediction.score":
        rec["prediction"]["score"] = marker
    else:
        rec["latency_ms"] = marker
    raw = json.dumps({"records": [rec]}).replace(f'"{marker}"', token).encode()
    r = post_raw(client, raw)
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == where
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"response echoes {c}"))
    assert stored(engine)["predictions"] == 0


def test_multiclass_probability_checks(client, engine):
    register(client, multiclass_model())

    def rec(i, probs):
        return prediction(i, model="species", features={}, cohorts={},
                          prediction={"probabilities": probs})

    recs = [
        rec(0, {"setosa": 0.5, "versicolor": 0.4}),            # sums to 0.9
        rec(1, {"setosa": 0.5, "tulip": 0.5}),                 # unknown class
        rec(2, {"setosa": 1.2, "versicolor": -0.2}),           # outside [0, 1]
        rec(3, {}),                                            # empty
        rec(4, {"setosa": 0.3334, "versicolor": 0.3333, "virginica": 0.3333}),  # ok, within 1e-3
    ]
    r = client.post("/v1/predictions", json={"records": recs})
    assert r.status_code == 422
    found = {(d["index"], d["field"]) for d in r.json()["details"]}
    assert found == {
        (0, "prediction.probabilities"),
        (1, "prediction.probabilities.tulip"),
        (2, "prediction.probabilities.setosa"),
        (2, "prediction.probabilities.versicolor"),
        (3, "prediction.probabilities"),
    }
    assert client.post("/v1/predictions", json={"records": [recs[4]]}).status_code == 200


@pytest.mark.parametrize("raw, status, code", [
    (b"", 400, "invalid_json"),
    (b"{", 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    (b"[]", 422, "validation_error"),
    (b'{"records": {}}', 422, "validation_error"),
    (b'{"records": [], "extra": 1}', 422, "validation_error"),
    (b'{"records": [17]}', 422, "validation_error"),
    (b'{"records": [{"model": 5}]}', 422, "validation_error"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
])
def test_malformed_bodies(client, engine, raw, status, code):
    register(client)
    r = post_raw(client, raw)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert r.json()["details"]


def test_empty_batch_is_accepted_as_nothing(client):
    register(client)
    assert client.post("/v1/predictions", json={"records": []}).json() == {
        "accepted": 0, "duplicates": 0}


def test_wrong_content_type_is_415(client):
    r = client.post("/v1/predictions", content=b"records=1",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert r.json()["code"] == "unsupported_media_type"
