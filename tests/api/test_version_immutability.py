"""Weights and reference of a version with stored predictions are part of their record: a
different upload is 409 version_in_use unless ``?replace=true``, which the audit log records
as a replacement; the same upload again, and any upload before the first prediction, pass."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from app.storage.tables import audit_log, weight_stats
from tests.api.test_weights_api import OCTET, npz_bytes
from tests.factories import prediction, register

CSV = {"content-type": "text/csv"}
URL = "/v1/models/fraud/versions/v1"


def reference_csv(shift: float) -> bytes:
    rows = "".join(f"{i + shift},DE,0.{i % 10}\n" for i in range(200))
    return ("amount,country,score\n" + rows).encode()


def weights(scale: float) -> bytes:
    return npz_bytes({"coef": np.array([[1.0, 0.0]]) * scale, "intercept": np.array([0.5])})


def upload(client, what: str, body: bytes, query: str = ""):
    return client.post(f"{URL}/{what}{query}", content=body,
                       headers=CSV if what == "reference" else OCTET)


def test_weights_and_reference_are_fixed_once_predictions_are_stored(client, engine):
    register(client)
    # before any prediction, both may be uploaded and replaced freely
    for what, first, second in (("weights", weights(1.0), weights(2.0)),
                                ("reference", reference_csv(0), reference_csv(5))):
        assert upload(client, what, first).status_code == 201
        assert upload(client, what, second).status_code == 201
    assert client.post("/v1/predictions", json={"records": [prediction(0)]}).status_code == 200
    for what, same, other in (("weights", weights(2.0), weights(3.0)),
                              ("reference", reference_csv(5), reference_csv(9))):
        # the training script run again uploads the same: no change, accepted
        assert upload(client, what, same).status_code == 201, what
        r = upload(client, what, other)
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["code"] == "version_in_use"
        assert "?replace=true" in body["message"] and "new version" in body["message"]
        assert body["details"][0]["field"] == "replace"
        assert upload(client, what, other, "?replace=true").status_code == 201, what
    with engine.connect() as conn:
        l1 = conn.execute(select(weight_stats.c.stats).where(
            weight_stats.c.tensor == "coef")).scalar_one()["l1"]
        actions = [(r.action, r.status) for r in conn.execute(
            select(audit_log).order_by(audit_log.c.id)) if ".register" not in r.action]
    assert l1 == 3.0  # the replacement stands
    assert actions == [
        ("weights.upload", 201), ("weights.upload", 201),
        ("reference.upload", 201), ("reference.upload", 201),
        ("weights.upload", 201), ("weights.upload", 409), ("weights.replace", 201),
        ("reference.upload", 201), ("reference.upload", 409), ("reference.replace", 201)]


def test_replace_must_be_a_boolean(client):
    register(client)
    r = upload(client, "weights", weights(1.0), "?replace=perhaps")
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "replace"
