"""The scikit-learn quickstart as a newcomer writes it: the breast-cancer data set, whose
feature names hold spaces (`mean radius`), an L1 logistic regression, `validation=`; the
cohorts report then carries the generalization gap's decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx2
from modelmon_client import Monitor
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def test_the_breast_cancer_quickstart_registers_logs_and_reports_a_gap(sqlite_server):
    start = datetime.now(UTC) - timedelta(minutes=1)
    # -- as the quickstart reads
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.3, random_state=0)
    model = LogisticRegression(penalty="l1", solver="liblinear").fit(X_train, y_train)
    with Monitor(sqlite_server.url, model="breast-cancer", version="v1") as monitor:
        monitor.register_sklearn(model, validation=(X_val, y_val))
        monitor.log_batch(X_val, predictions=model.predict_proba(X_val), labels=y_val)
        assert monitor.flush(timeout=60)
        assert (monitor.stats.sent, monitor.stats.refused) == (len(X_val), 0)
    # --
    url = f"{sqlite_server.url}/v1/models/breast-cancer"
    features = [f["name"] for f in httpx2.get(url).json()["features"]]
    assert features == list(X.columns) and "mean radius" in features
    stored = httpx2.get(f"{url}/versions/v1").json()["metadata"]
    assert stored["regularization"]["type"] == "l1"
    assert stored["training"]["parameters"] == 31  # 30 coefficients and the intercept
    assert stored["training"]["nonzero_parameters"] == int(
        (model.coef_ != 0).sum() + (model.intercept_ != 0).sum())
    window = {"start": start.isoformat(), "end": (datetime.now(UTC) + timedelta(minutes=1))
              .isoformat()}
    report = httpx2.get(f"{url}/reports/cohorts", params=window).json()
    (version,) = report["versions"]
    gap = version["generalization_gap"]["overall"]
    wrong = float((model.predict(X_val) != y_val).mean())
    assert gap["n"] == len(X_val)
    # logged on the validation rows themselves: production error is the validation error
    assert gap["validation_error"] == gap["production_error"] == wrong
    assert gap["decision"] == "ok"
    drift = httpx2.get(f"{url}/reports/drift", params=window).json()
    assert "mean radius" in {f["feature"] for f in drift["versions"][0]["features"]}


def test_refused_feature_names_are_all_named_in_one_problem(sqlite_server):
    bad = [f"col\t{i}" for i in range(30)] + ["x" * 129, ""]
    body = {"name": "names", "task": "regression",
            "features": [{"name": n, "type": "numeric"} for n in [*bad, "fine name", "ünï/ok"]]}
    r = httpx2.post(f"{sqlite_server.url}/v1/models", json=body)
    assert r.status_code == 422, r.text
    (problem,) = r.json()["details"]
    assert problem["problem"].startswith("32 feature name(s) refused")
    for i in range(30):
        assert repr(f"col\t{i}") in problem["problem"]
    assert "129 characters long" in problem["problem"] and "an empty name" in problem["problem"]
    assert "fine name" not in problem["problem"]
    body["features"] = [{"name": n, "type": "numeric"} for n in ("fine name", "ünï/ok")]
    assert httpx2.post(f"{sqlite_server.url}/v1/models", json=body).status_code == 201
