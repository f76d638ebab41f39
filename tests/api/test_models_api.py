"""Model and version registration: idempotent re-registration, 409 on conflict, clear 4xx."""

from __future__ import annotations

import json

import pytest

from tests.factories import binary_model, multiclass_model, regression_model, version


def test_register_model_then_identical_is_noop_and_different_is_conflict(client):
    r = client.post("/v1/models", json=binary_model())
    assert r.status_code == 201
    assert r.json()["classes"] == ["legit", "fraud"]
    assert r.json()["versions"] == 0
    again = client.post("/v1/models", json=binary_model())
    assert again.status_code == 200
    assert again.json()["created_at"] == r.json()["created_at"]
    other = client.post("/v1/models", json=binary_model(cohort_keys=["region", "device"]))
    assert other.status_code == 409
    body = other.json()
    assert body["code"] == "conflict"
    assert [d["field"] for d in body["details"]] == ["cohort_keys"]


def test_binary_classes_default(client):
    r = client.post("/v1/models", json=binary_model(classes=None))
    assert r.status_code == 201
    assert r.json()["classes"] == ["0", "1"]


@pytest.mark.parametrize(
    "body, field",
    [
        (binary_model(task="ranking"), "task"),
        (binary_model(name="bad name"), "name"),
        (binary_model(name=""), "name"),
        (binary_model(features=[{"name": "a", "type": "numeric"},
                                {"name": "a", "type": "categorical"}]), None),
        (binary_model(features=[{"name": "a", "type": "text"}]), "features[0].type"),
        (binary_model(classes=["a", "b", "c"]), None),
        (multiclass_model(classes=["only"]), None),
        (regression_model(classes=["a", "b"]), None),
        (binary_model(extra=1), "extra"),
        (binary_model(cohort_keys=["r", "r"]), None),
    ],
)
def test_invalid_model_is_422_naming_the_field(client, body, field):
    r = client.post("/v1/models", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["code"] == "validation_error"
    assert err["details"], err
    if field is not None:
        assert field in [d.get("field") for d in err["details"]], err
    assert client.get("/v1/models").json() == []


def test_get_and_list_models(client):
    client.post("/v1/models", json=binary_model())
    client.post("/v1/models", json=regression_model())
    names = [m["name"] for m in client.get("/v1/models").json()]
    assert names == ["eta", "fraud"]
    assert client.get("/v1/models/eta").json()["task"] == "regression"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "unknown_model"


def test_versions_idempotent_conflict_and_order(client):
    client.post("/v1/models", json=binary_model())
    first = client.post("/v1/models/fraud/versions", json=version("v1"))
    assert first.status_code == 201
    assert first.json()["metadata"]["regularization"] == {"type": "l1", "lambda": 0.01}
    assert client.post("/v1/models/fraud/versions", json=version("v1")).status_code == 200
    changed = version("v1")
    changed["metadata"]["regularization"]["lambda"] = 0.5
    conflict = client.post("/v1/models/fraud/versions", json=changed)
    assert conflict.status_code == 409
    assert conflict.json()["details"][0]["field"] == "metadata"
    client.post("/v1/models/fraud/versions", json=version("v2"))
    listed = client.get("/v1/models/fraud/versions").json()
    assert [v["version"] for v in listed] == ["v1", "v2"]
    assert client.get("/v1/models/fraud").json()["versions"] == 2


def test_version_created_at_is_compared_only_when_given(client):
    client.post("/v1/models", json=binary_model())
    body = version("v1", created_at="2026-11-20T09:00:00Z")
    assert client.post("/v1/models/fraud/versions", json=body).status_code == 201
    assert client.post("/v1/models/fraud/versions", json=version("v1")).status_code == 200
    moved = version("v1", created_at="2026-11-21T09:00:00Z")
    r = client.post("/v1/models/fraud/versions", json=moved)
    assert r.status_code == 409
    assert [d["field"] for d in r.json()["details"]] == ["created_at"]


def test_version_for_unknown_model_is_404(client):
    r = client.post("/v1/models/ghost/versions", json=version("v1"))
    assert r.status_code == 404
    assert r.json()["code"] == "unknown_model"
    assert client.get("/v1/models/ghost/versions").status_code == 404


@pytest.mark.parametrize(
    "metadata, field",
    [
        ({"regularization": {"type": "l3", "lambda": 1}}, "metadata.regularization.type"),
        ({"regularization": {"type": "l1"}}, "metadata.regularization"),
        ({"regularization": {"type": "elastic_net", "lambda": 1}}, "metadata.regularization"),
        ({"regularization": {"type": "l2", "lambda": -1}}, "metadata.regularization.lambda"),
        ({"artifact_bytes": -5}, "metadata.artifact_bytes"),
        ({"surprise": True}, "metadata.surprise"),
        ({"training": {"validation_ece": 1.5}}, "metadata.training.validation_ece"),
        ({"training": {"penalty_loss": -0.1}}, "metadata.training.penalty_loss"),
        ({"training": {"parameters": 10, "nonzero_parameters": 11}}, "metadata.training"),
        ({"training": {"cohort_validation_error": {"eu": 0.1}}},
         "metadata.training.cohort_validation_error.eu.[key]"),
        ({"training": {"train_rows": 1.5}}, "metadata.training.train_rows"),
        ({"training": {"loss": 0.2}}, "metadata.training.loss"),
    ],
)
def test_invalid_version_metadata_is_422(client, metadata, field):
    client.post("/v1/models", json=binary_model())
    r = client.post("/v1/models/fraud/versions", json={"version": "v1", "metadata": metadata})
    assert r.status_code == 422, r.text
    assert field in [d.get("field") for d in r.json()["details"]], r.json()
    assert client.get("/v1/models/fraud/versions").json() == []


@pytest.mark.parametrize("raw", [
    b'{"version": "v1", "metadata": {"hyperparameters": {"lr": NaN}}}',
    b'{"version": "v1", "metadata": {"hyperparameters": {"lr": Infinity}}}',
    b'{"version": "v1", "metadata": {"hyperparameters": {"lr": [1, -1e999]}}}',
    b'{"version": "v1", "metadata": {"hyperparameters": {"s": "a\\u0000b"}}}',
    b'{"version": "v1", "metadata": {"hyperparameters": {"s": "\\ud800"}}}',
    b'{"version": "v1", "metadata": {"hyperparameters": {"big": 1' + b"0" * 400 + b"}}}",
])
def test_unstorable_values_in_free_form_metadata_are_422_and_never_echoed(client, raw):
    client.post("/v1/models", json=binary_model())
    r = client.post("/v1/models/fraud/versions", content=raw,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["details"][0]
    assert detail["field"].startswith("metadata.hyperparameters")
    # The response is strict JSON: the refused value is named by path, never echoed.
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"response echoes {c}"))
    assert client.get("/v1/models/fraud/versions").json() == []


TRAINING = {"train_loss": 0.21, "validation_loss": 0.25, "penalty_loss": 0.03,
            "validation_error": 0.08, "validation_ece": 0.02,
            "cohort_validation_error": {"region=eu": 0.09, "region=us": 0.07},
            "train_rows": 80000, "validation_rows": 20000, "parameters": 1200,
            "nonzero_parameters": 310}


def test_training_metadata_at_registration_and_patched_until_the_first_prediction(client):
    from tests.factories import prediction

    client.post("/v1/models", json=binary_model())
    body = version("v1")
    body["metadata"]["training"] = TRAINING
    r = client.post("/v1/models/fraud/versions", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["training"] == TRAINING
    assert client.post("/v1/models/fraud/versions", json=body).status_code == 200  # same
    client.post("/v1/models/fraud/versions", json=version("v2"))
    later = {"train_loss": 0.3, "validation_loss": 0.31}
    r = client.patch("/v1/models/fraud/versions/v2", json={"training": later})
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["training"] == later
    assert r.json()["metadata"]["regularization"] == {"type": "l1", "lambda": 0.01}
    r = client.patch("/v1/models/fraud/versions/v2", json={"training": {"train_rows": -1}})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "training.train_rows"
    assert client.patch("/v1/models/fraud/versions/v9",
                        json={"training": later}).status_code == 404
    record = prediction(0)
    record["version"] = "v2"
    assert client.post("/v1/predictions", json={"records": [record]}).status_code == 200
    r = client.patch("/v1/models/fraud/versions/v2", json={"training": TRAINING})
    assert r.status_code == 409 and r.json()["code"] == "version_in_use"
    versions = {v["version"]: v for v in client.get("/v1/models/fraud/versions").json()}
    assert versions["v2"]["metadata"]["training"] == later
