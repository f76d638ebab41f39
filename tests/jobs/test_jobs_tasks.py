"""Jobs and reports for multiclass and regression models (the binary path is in
test_jobs.py): every job succeeds and the reports equal the library on the same rows."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from app.jobs import runner
from app.monitoring import calibration_multiclass, cohort_error
from app.settings import Settings
from tests.factories import iso
from tests.jobs_data import latest_window, post_all

CLASSES = ["a", "b", "c"]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1)


def _times(start, end, n, rng):
    span = (end - start).total_seconds() - 1
    return [iso(start + timedelta(seconds=float(s))) for s in np.sort(rng.uniform(0, span, n))]


def test_multiclass_jobs_and_reports(client, engine, settings):
    rng = np.random.default_rng(17)
    client.post("/v1/models", json={"name": "iris", "task": "multiclass_classification",
                                    "features": [{"name": "petal", "type": "numeric"}],
                                    "cohort_keys": ["site"], "classes": CLASSES})
    client.post("/v1/models/iris/versions", json={"version": "v1"})
    n = 600
    probs = rng.dirichlet([2, 1, 1], size=n).round(6)
    probs[:, 2] = 1 - probs[:, 0] - probs[:, 1]
    y = np.array([rng.choice(3, p=p / p.sum()) for p in probs])
    sites = rng.choice(["x", "y"], size=n)
    ref = [{"petal": float(v), "predicted_label": CLASSES[int(np.argmax(p))]}
           for v, p in zip(rng.normal(size=400), rng.dirichlet([2, 1, 1], size=400),
                           strict=True)]
    assert client.post("/v1/models/iris/versions/v1/reference",
                       json={"records": ref}).status_code == 201
    start, end = latest_window()
    ts = _times(start, end, n, rng)
    records = [{"model": "iris", "version": "v1", "prediction_id": f"m{i}", "timestamp": ts[i],
                "features": {"petal": float(rng.normal())},
                "prediction": {"probabilities": dict(zip(CLASSES, map(float, probs[i]),
                                                         strict=True))},
                "cohorts": {"site": str(sites[i])}, "label": CLASSES[y[i]]}
               for i in range(n)]
    post_all(client, "/v1/predictions", records)
    assert runner.tick(engine, settings, now=end) == {"success": 4}
    params = {"start": iso(start), "end": iso(end)}
    cal = client.get("/v1/models/iris/reports/calibration", params=params).json()["versions"][0]
    expected = calibration_multiclass(probs, y.astype(float), 10)
    assert cal["ece"] == pytest.approx(expected.ece, rel=1e-9)
    assert cal["brier"] == pytest.approx(expected.brier, rel=1e-9)
    coh = client.get("/v1/models/iris/reports/cohorts", params=params).json()
    site = coh["versions"][0]["cohort_keys"]["site"]
    exp = cohort_error(sites, probs, y.astype(float), task="multiclass")
    assert site["overall"]["error_rate"] == pytest.approx(exp.overall.error_rate)
    drift = client.get("/v1/models/iris/reports/drift", params=params).json()["versions"][0]
    assert drift["prediction"]["type"] == "categorical"
    assert drift["prediction"]["bins"][:3] == CLASSES


def test_regression_jobs_and_reports(client, engine, settings):
    rng = np.random.default_rng(23)
    client.post("/v1/models", json={"name": "eta", "task": "regression",
                                    "features": [{"name": "distance", "type": "numeric"}],
                                    "cohort_keys": ["city"]})
    client.post("/v1/models/eta/versions", json={"version": "v1"})
    n = 500
    pred = rng.normal(20, 5, size=n)
    truth = pred + rng.normal(0, 2, size=n)
    cities = rng.choice(["oslo", "rome"], size=n)
    start, end = latest_window()
    ts = _times(start, end, n, rng)
    records = [{"model": "eta", "version": "v1", "prediction_id": f"r{i}", "timestamp": ts[i],
                "features": {"distance": float(rng.gamma(2.0))},
                "prediction": {"value": float(pred[i])}, "cohorts": {"city": str(cities[i])},
                "label": float(truth[i])} for i in range(n)]
    post_all(client, "/v1/predictions", records)
    assert runner.tick(engine, settings, now=end) == {"success": 4}
    params = {"start": iso(start), "end": iso(end)}
    cal = client.get("/v1/models/eta/reports/calibration", params=params).json()["versions"][0]
    assert cal["status"] == "not_applicable"
    coh = client.get("/v1/models/eta/reports/cohorts", params=params).json()
    city = coh["versions"][0]["cohort_keys"]["city"]
    exp = cohort_error(cities, pred, truth, task="regression")
    assert city["overall"]["mae"] == pytest.approx(exp.overall.mae)
    hist = client.get("/v1/models/eta/history", params={"metric": "cohort_mae"}).json()
    assert {p["subject"] for p in hist["points"]} == {"city=oslo", "city=rome"}
    drift = client.get("/v1/models/eta/reports/drift", params=params).json()["versions"][0]
    assert drift["reference"]["source"] == "baseline"
    assert drift["prediction"]["ks_statistic"] is not None
