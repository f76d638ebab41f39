"""Request bodies for tests: valid by default, overridden per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

NOW = datetime.now(UTC).replace(microsecond=0)


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def binary_model(name: str = "fraud", **over: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "task": "binary_classification",
        "features": [{"name": "amount", "type": "numeric"},
                     {"name": "country", "type": "categorical"}],
        "cohort_keys": ["region"],
        "classes": ["legit", "fraud"],
    }
    body.update(over)
    return body


def multiclass_model(name: str = "species", **over: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "task": "multiclass_classification",
        "features": [{"name": "petal", "type": "numeric"}],
        "cohort_keys": [],
        "classes": ["setosa", "versicolor", "virginica"],
    }
    body.update(over)
    return body


def regression_model(name: str = "eta", **over: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "task": "regression",
        "features": [{"name": "distance", "type": "numeric"}],
        "cohort_keys": ["city"],
    }
    body.update(over)
    return body


def version(name: str = "v1", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": name,
        "metadata": {"regularization": {"type": "l1", "lambda": 0.01},
                     "hyperparameters": {"lr": 0.1}},
    }
    body.update(over)
    return body


def prediction(i: int = 0, model: str = "fraud", ver: str = "v1", **over: Any) -> dict[str, Any]:
    rec = {
        "model": model,
        "version": ver,
        "prediction_id": f"p-{i}",
        "timestamp": iso(NOW - timedelta(seconds=i)),
        "features": {"amount": 10.0 + i, "country": "DE"},
        "prediction": {"score": 0.25},
        "cohorts": {"region": "eu"},
    }
    rec.update(over)
    return rec


def label(i: int = 0, model: str = "fraud", value: Any = "fraud", **over: Any) -> dict[str, Any]:
    rec = {"model": model, "prediction_id": f"p-{i}", "label": value,
           "timestamp": iso(NOW + timedelta(minutes=5))}
    rec.update(over)
    return rec


def register(client, model: dict[str, Any] | None = None,
             versions: tuple[str, ...] = ("v1",)) -> dict[str, Any]:
    model = model or binary_model()
    r = client.post("/v1/models", json=model)
    assert r.status_code in (200, 201), r.text
    for v in versions:
        r2 = client.post(f"/v1/models/{model['name']}/versions", json=version(v))
        assert r2.status_code in (200, 201), r2.text
    return model
