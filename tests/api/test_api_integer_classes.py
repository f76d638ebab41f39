"""Integer class labels (scikit-learn's ``classes_ = [0, 1]``) wherever classes and labels
appear: registration, predicted labels, inline and late ground truth, on the typed fast path
and on the complete validator alike. They are stored and reported as their decimal strings,
so a model registered with ``[0, 1]`` and fed integers reads back exactly like one registered
with ``["0", "1"]`` and fed strings."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from app.ingest import decode, service
from tests.factories import NOW, binary_model, iso, multiclass_model, prediction, version
from tests.helpers import stored_labels, stored_predictions

WINDOW = {"start": iso(NOW - timedelta(hours=1)), "end": iso(NOW + timedelta(minutes=10))}
# An escaped backslash before "u0000" is harmless text, but the fast path's scan for
# unstorable escapes cannot tell it from a NUL: such a batch is read by the complete validator.
SLOW_ID = "slow-\\u0000-"


def takes_fast_path(engine, settings, body: bytes) -> bool:
    try:
        decode.decode_predictions(body, lambda wanted: service.SchemaCache().get(engine, wanted),
                                  service._limits(settings), settings.max_batch_records)
    except decode.NotFast:
        return False
    return True


def records(model: str, as_int: bool, prefix: str) -> list[dict[str, Any]]:
    """Sixty predictions, some with an inline label, with the classes as integers or strings."""
    out = []
    for i in range(60):
        cls: Any = i % 2 if as_int else str(i % 2)
        score = 0.8 if i % 3 else 0.3
        rec = prediction(i, model=model, prediction_id=f"{prefix}{i}",
                         features={"amount": float(i), "country": "DE"},
                         prediction={"score": score, "label": cls},
                         cohorts={"region": ["eu", "us"][i % 2]})
        if i % 4 == 0:
            rec["label"] = cls
        out.append(rec)
    return out


def post(client, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    r = client.post("/v1/predictions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": len(body["records"]), "duplicates": 0}
    return raw


def test_integer_classes_are_registered_as_their_decimal_strings(client):
    r = client.post("/v1/models", json=binary_model("ints", classes=[0, 1]))
    assert r.status_code == 201, r.text
    assert r.json()["classes"] == ["0", "1"]
    assert client.get("/v1/models/ints").json()["classes"] == ["0", "1"]
    # the same definition with strings is the same model
    assert client.post("/v1/models", json=binary_model("ints", classes=["0", "1"])
                       ).status_code == 200
    r = client.post("/v1/models", json=multiclass_model("digits", classes=[0, 1, 2]))
    assert r.status_code == 201 and r.json()["classes"] == ["0", "1", "2"]
    for bad in ([0, "0"], [True, False], [0.0, 1.0], [0, None]):
        r = client.post("/v1/models", json=binary_model("bad", classes=bad))
        assert r.status_code == 422, (bad, r.text)
    assert client.get("/v1/models/bad").status_code == 404


def test_integer_labels_are_stored_and_reported_like_strings_on_both_paths(
        client, engine, settings):
    for name, classes in (("ints", [0, 1]), ("strs", ["0", "1"])):
        assert client.post("/v1/models", json=binary_model(name, classes=classes)
                           ).status_code == 201
        assert client.post(f"/v1/models/{name}/versions", json=version()).status_code == 201

    for name, as_int in (("ints", True), ("strs", False)):
        fast = records(name, as_int, "p")[:30]
        slow = records(name, as_int, SLOW_ID)[30:]
        assert takes_fast_path(engine, settings, json.dumps({"records": fast}).encode())
        assert not takes_fast_path(engine, settings, json.dumps({"records": slow}).encode())
        post(client, {"records": fast})
        post(client, {"records": slow})
        # late labels, as integers or strings, for predictions without an inline one
        late = [{"model": name, "prediction_id": r["prediction_id"],
                 "label": r["prediction"]["label"], "timestamp": iso(NOW)}
                for r in fast + slow if "label" not in r]
        r = client.post("/v1/labels", json={"records": late})
        assert r.status_code == 200 and r.json()["matched"] == 45, r.text

    rows = stored_predictions(engine)
    by_model: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_model.setdefault(row.model_id, {})[row.prediction_id] = row.predicted_label
    ints, strs = by_model.values()
    assert ints == strs and set(ints.values()) == {"0", "1"} and len(ints) == 60
    labels: dict[int, dict[str, Any]] = {}
    for row in stored_labels(engine):
        labels.setdefault(row.model_id, {})[row.prediction_id] = (row.label_class,
                                                                  row.label_value)
    ints_l, strs_l = labels.values()
    assert ints_l == strs_l and len(ints_l) == 60
    assert {c for c, _ in ints_l.values()} == {"0", "1"}

    for kind in ("drift", "calibration", "cohorts"):
        a = client.get(f"/v1/models/ints/reports/{kind}", params=WINDOW)
        b = client.get(f"/v1/models/strs/reports/{kind}", params=WINDOW)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        a_body, b_body = a.json(), b.json()
        assert a_body.pop("model") == "ints" and b_body.pop("model") == "strs"
        for body in (a_body, b_body):  # a baseline's bounds are when each model began
            for v in body["versions"]:
                v.get("reference", {}).pop("window_start", None)
                v.get("reference", {}).pop("window_end", None)
        assert a_body == b_body, kind
        assert a_body["versions"][0]["n"] == 60
    calibration = client.get("/v1/models/ints/reports/calibration", params=WINDOW).json()
    assert calibration["versions"][0]["label_coverage"] == 1.0


def test_multiclass_integer_labels_on_the_fast_path(client, engine, settings):
    assert client.post("/v1/models", json=multiclass_model("digits", classes=[0, 1, 2])
                       ).status_code == 201
    assert client.post("/v1/models/digits/versions", json=version()).status_code == 201
    batch = [prediction(i, model="digits", features={"petal": float(i)}, cohorts={},
                        prediction={"probabilities": {"0": 0.2, "1": 0.3, "2": 0.5},
                                    "label": 2}, label=i % 3) for i in range(12)]
    raw = json.dumps({"records": batch}).encode()
    assert takes_fast_path(engine, settings, raw)
    post(client, {"records": batch})
    assert {r.predicted_label for r in stored_predictions(engine)} == {"2"}
    assert sorted(r.label_class for r in stored_labels(engine)) == sorted(
        str(i % 3) for i in range(12))
    # a class the model does not have is refused with the field named, on either path
    bad = [prediction(99, model="digits", features={"petal": 1.0}, cohorts={},
                      prediction={"probabilities": {"0": 1.0}, "label": 3})]
    r = client.post("/v1/predictions", json={"records": bad})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "prediction.label"
    r = client.post("/v1/labels", json={"records": [
        {"model": "digits", "prediction_id": "p-0", "label": 7, "timestamp": iso(NOW)}]})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "label"
