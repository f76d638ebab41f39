"""Multivariate drift end to end: a reference uploaded as CSV fits the PCA basis, predictions
whose two features' correlation flipped (each marginal unchanged) are folded at ingest, the
drift job stores the decision, the drift report states it, and /metrics exports it, while the
features' own drift stays ok."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import numpy as np
import pytest

from app.jobs import runner
from app.settings import Settings
from tests.api.test_metrics import scrape
from tests.factories import iso
from tests.jobs_data import latest_window, post_all

MODEL = {"name": "pairs", "task": "binary_classification",
         "features": [{"name": n, "type": "numeric"} for n in ("a", "b", "c")],
         "cohort_keys": [], "classes": ["no", "yes"]}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1, metrics_cache_seconds=0)


def features(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    a = rng.normal(size=n)
    return np.column_stack([a, rho * a + np.sqrt(1 - rho * rho) * rng.normal(size=n),
                            rng.normal(size=n)])


def reference_csv(rng: np.random.Generator, n: int) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["a", "b", "c", "score"])
    for row, s in zip(features(rng, n, 0.8), rng.beta(2, 5, size=n), strict=True):
        w.writerow([*(f"{v:.9f}" for v in row), f"{s:.6f}"])
    return out.getvalue().encode()


def test_a_correlation_flip_is_stored_reported_and_exported(client, engine, settings):
    rng = np.random.default_rng(11)
    assert client.post("/v1/models", json=MODEL).status_code == 201
    assert client.post("/v1/models/pairs/versions", json={"version": "v1"}).status_code == 201
    r = client.post("/v1/models/pairs/versions/v1/reference", content=reference_csv(rng, 3000),
                    headers={"content-type": "text/csv"})
    assert r.status_code in (200, 201), r.text
    start, end = latest_window()
    x = features(rng, 1500, -0.8)
    offsets = np.sort(rng.uniform(0, (end - start).total_seconds() - 1, size=1500))
    post_all(client, "/v1/predictions", [
        {"model": "pairs", "version": "v1", "prediction_id": f"p-{i}",
         "timestamp": iso(start + timedelta(seconds=float(offsets[i]))),
         "features": {"a": float(x[i, 0]), "b": float(x[i, 1]), "c": float(x[i, 2])},
         "prediction": {"score": 0.3}} for i in range(1500)])
    assert runner.tick(engine, settings, now=end).get("success")

    report = client.get("/v1/models/pairs/reports/drift",
                        params={"start": start.isoformat(), "end": end.isoformat()}).json()
    (v,) = report["versions"]
    mv = v["multivariate"]
    assert mv["decision"] == "critical" and mv["n"] == 1500, mv
    assert mv["effect"] > 1 and mv["features"] == ["a", "b", "c"]
    assert all(f["decision"] == "ok" for f in v["features"]), v["features"]

    history = client.get("/v1/models/pairs/history",
                         params={"metric": "multivariate_pca_error"}).json()
    assert history["points"][-1]["value"] == pytest.approx(mv["effect"])
    assert history["points"][-1]["decision"] == "critical"
    s = scrape(client)
    labels = (("model", "pairs"), ("version", "v1"))
    assert s[("modelmon_check_state", (("check", "multivariate_drift"), *labels))] == 2
    assert s[("modelmon_multivariate_pca_error_effect", labels)] == pytest.approx(mv["effect"])
    assert s[("modelmon_check_state", (("check", "feature_drift"), *labels))] == 0
