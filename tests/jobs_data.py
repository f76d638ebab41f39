"""Synthetic traffic with known properties for the job and report tests."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from app.jobs.runner import aligned_end
from tests.factories import iso

N_FEATURES = 20
SHIFTED = ("f3", "f7", "f11")
INTERVAL, WINDOW = 300.0, 3600.0


def drift_model(name: str = "credit") -> dict[str, Any]:
    features = [{"name": f"f{i}", "type": "numeric"} for i in range(N_FEATURES)]
    features.append({"name": "channel", "type": "categorical"})
    return {"name": name, "task": "binary_classification", "features": features,
            "cohort_keys": ["region"], "classes": ["good", "bad"]}


def latest_window(now: datetime | None = None) -> tuple[datetime, datetime]:
    end = aligned_end(now or datetime.now(UTC), INTERVAL)
    return end - timedelta(seconds=WINDOW), end


def feature_rows(rng: np.random.Generator, n: int, shifted: tuple[str, ...] = ()) -> list[dict]:
    x = rng.normal(size=(n, N_FEATURES))
    for name in shifted:
        x[:, int(name[1:])] += 0.6
    channels = rng.choice(["web", "app", "store"], size=n, p=[0.5, 0.3, 0.2])
    return [{**{f"f{j}": float(x[i, j]) for j in range(N_FEATURES)},
             "channel": str(channels[i])} for i in range(n)]


def reference_csv(rng: np.random.Generator, n: int = 5000) -> bytes:
    rows = feature_rows(rng, n)
    scores = rng.beta(2, 5, size=n)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*rows[0].keys(), "score", "row_id"])
    writer.writeheader()
    for i, (r, s) in enumerate(zip(rows, scores, strict=True)):
        writer.writerow({**r, "score": f"{s:.6f}", "row_id": i})
    return out.getvalue().encode()


def traffic(rng: np.random.Generator, n: int, start: datetime, end: datetime, *,
            version: str = "v1", shifted: tuple[str, ...] = (), prefix: str = "t",
            model: str = "credit") -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """Prediction records spread over [start, end), with calibrated scores (label ~
    Bernoulli(score)) except in region "north" where the model is wrong half the time.
    Returns (records, scores, true labels 0/1, regions)."""
    rows = feature_rows(rng, n, shifted)
    scores = rng.beta(2, 5, size=n)
    y = (rng.random(n) < scores).astype(int)
    regions = rng.choice(["north", "south", "east", "west"], size=n)
    north = regions == "north"
    y[north] = rng.integers(0, 2, size=int(north.sum()))
    span = (end - start).total_seconds()
    offsets = np.sort(rng.uniform(0, span - 1, size=n))
    records = [
        {"model": model, "version": version, "prediction_id": f"{prefix}-{i}",
         "timestamp": iso(start + timedelta(seconds=float(offsets[i]))),
         "features": rows[i], "prediction": {"score": round(float(scores[i]), 6)},
         "cohorts": {"region": str(regions[i])}, "latency_ms": 5.0}
        for i in range(n)
    ]
    for r, s in zip(records, scores, strict=True):
        r["prediction"]["score"] = float(s)
    return records, scores, y, regions


def labels_for(records: list[dict], y: np.ndarray, model: str = "credit") -> list[dict]:
    return [{"model": model, "prediction_id": r["prediction_id"],
             "label": "bad" if y[i] else "good", "timestamp": r["timestamp"]}
            for i, r in enumerate(records)]


def post_all(client, path: str, records: list[dict], batch: int = 1000) -> None:
    for i in range(0, len(records), batch):
        r = client.post(path, json={"records": records[i:i + batch]})
        assert r.status_code == 200, r.text


def seed(settings: Any, n: int = 400, *, labeled: int = 300, seed: int = 2,
         start: datetime | None = None, end: datetime | None = None) -> None:
    """Through the API on ``settings``' database: the drift model with a reference and
    weights, ``n`` predictions in [start, end) (default: the half hour up to now) and labels
    for the first ``labeled`` of them."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.storage import migrate

    now = datetime.now(UTC)
    start, end = start or now - timedelta(minutes=30), end or now
    rng = np.random.default_rng(seed)
    app = create_app(settings, run_scheduler=False)
    migrate.upgrade(app.state.engine)
    with TestClient(app) as c:
        c.post("/v1/models", json=drift_model())
        c.post("/v1/models/credit/versions", json={"version": "v1"})
        c.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng, 500),
               headers={"content-type": "text/csv"})
        c.post("/v1/models/credit/versions/v1/weights", json={"tensors": [
            {"name": "w", "shape": [4], "count": 4, "zeros": 1, "l1": 2.0, "l2": 1.2,
             "max_abs": 0.9, "mean": 0.1, "std": 0.4}]})
        records, _, y, _ = traffic(rng, n, start, end)
        post_all(c, "/v1/predictions", records)
        post_all(c, "/v1/labels", labels_for(records[:labeled], y[:labeled]))
    app.state.engine.dispose()
