"""examples/sklearn_fastapi: the app registers its model with a real server, logs every
prediction it serves and the feedback it gets, and flushes when it shuts down."""

from __future__ import annotations

import importlib.util
import sys

import httpx2
from fastapi.testclient import TestClient

from tests.conftest import ROOT


def test_the_fastapi_example_registers_logs_and_flushes_at_shutdown(sqlite_server,
                                                                     monkeypatch):
    monkeypatch.setenv("MODELMON_URL", sqlite_server.url)
    monkeypatch.setenv("MODEL_NAME", "fraud-example")
    spec = importlib.util.spec_from_file_location(
        "sklearn_fastapi_example", ROOT / "examples" / "sklearn_fastapi" / "app.py")
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # as an import would
    spec.loader.exec_module(example)

    with TestClient(example.app) as http:
        answers = [http.post("/predict", json={
            "features": {"amount": 20.0 + 40 * i, "age": 20 + i,
                         "country": ["DE", "FR", "US", "BR"][i % 4]},
            "region": "eu" if i % 2 else "us"}) for i in range(40)]
        assert all(r.status_code == 200 for r in answers)
        for r in answers[:10]:
            assert http.post("/feedback", json={"prediction_id": r.json()["prediction_id"],
                                                "is_fraud": True}).status_code == 200
        assert http.get("/monitoring").json()["dropped"] == 0
    # the lifespan's exit closed the monitor: everything is stored now
    assert sqlite_server.predictions("fraud-example") == 40
    assert sqlite_server.labels("fraud-example") == 10
    model = httpx2.get(f"{sqlite_server.url}/v1/models/fraud-example").json()
    assert {f["name"]: f["type"] for f in model["features"]} == {
        "amount": "numeric", "age": "numeric", "country": "categorical"}
    [version] = httpx2.get(f"{sqlite_server.url}/v1/models/fraud-example/versions").json()
    assert version["metadata"]["regularization"] == {"type": "l2", "lambda": 2.0}
