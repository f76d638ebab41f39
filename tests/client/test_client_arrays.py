"""Whole numpy/pandas batches, scikit-learn registration (features, classes,
regularization, weights), the Prometheus export and the asyncio face."""

from __future__ import annotations

import asyncio

import httpx2
import numpy as np
import pandas as pd
import pytest
from modelmon_client import AsyncMonitor, ModelmonError, Monitor
from modelmon_client.sklearn import regularization, weight_tensors
from prometheus_client import CollectorRegistry
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
)
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier


@pytest.mark.parametrize(("estimator", "expected"), [
    (LogisticRegression(C=0.5), {"type": "l2", "lambda": 2.0}),
    (LogisticRegression(C=4.0, l1_ratio=1.0, solver="saga"), {"type": "l1", "lambda": 0.25}),
    (LogisticRegression(C=2.0, l1_ratio=0.3, solver="saga"),
     {"type": "elastic_net", "lambda": 0.5, "l1_ratio": 0.3}),
    (LogisticRegression(C=np.inf), {"type": "none"}),
    (Lasso(alpha=0.1), {"type": "l1", "lambda": 0.1}),
    (Ridge(alpha=3.0), {"type": "l2", "lambda": 3.0}),
    (ElasticNet(alpha=0.2, l1_ratio=0.7), {"type": "elastic_net", "lambda": 0.2, "l1_ratio": 0.7}),
    (SGDClassifier(penalty="l1", alpha=1e-3), {"type": "l1", "lambda": 1e-3}),
    (SGDClassifier(penalty=None), {"type": "none"}),
    (MLPRegressor(alpha=1e-4), {"type": "l2", "lambda": 1e-4}),
    (make_pipeline(StandardScaler(), Lasso(alpha=0.5)), {"type": "l1", "lambda": 0.5}),
    (DecisionTreeClassifier(), None),
])
def test_regularization_from_the_estimators_own_parameters(estimator, expected):
    assert regularization(estimator) == expected


def test_linear_regression_is_unregularised_once_fitted():
    x = np.arange(20.0).reshape(10, 2)
    model = LinearRegression().fit(x, x[:, 0] * 2)
    assert regularization(model) == {"type": "none"}
    assert set(weight_tensors(model)) == {"coef", "intercept"}


def training_data(n: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"amount": rng.gamma(2.0, 30.0, n), "age": rng.normal(40, 10, n)})
    y = np.where(x["amount"] + rng.normal(0, 20, n) > 60, "fraud", "legit")
    return x, y


def test_register_sklearn_then_log_a_whole_batch(sqlite_server):
    x, y = training_data()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, l1_ratio=1.0,
                                                               solver="saga")).fit(x, y)
    with Monitor(sqlite_server.url, model="sk", version="v1", batch_size=128) as monitor:
        answers = monitor.register_sklearn(model, cohort_keys=["region"])
        assert answers["weights"]["tensors"] == 2
        # coef_ arrives as per-feature weights without configuration
        per_feature = answers["weights"]["features"]
        coef = model[-1].coef_[0]
        assert (per_feature["tensor"], per_feature["axis"]) == ("coef", 1)
        assert [f["feature"] for f in per_feature["features"]] == ["amount", "age"]
        assert [f["l1"] for f in per_feature["features"]] == pytest.approx(
            np.abs(coef).tolist(), rel=1e-12)
        assert [f["zero"] for f in per_feature["features"]] == (coef == 0).tolist()
        # any other layout names its tensor and axis: a (hidden, features) first layer
        kernel = np.arange(10.0).reshape(5, 2)
        kernel[:, 1] = 0.0
        named = monitor.upload_weights({"fc1.weight": kernel}, feature_tensor="fc1.weight",
                                       feature_axis=1)
        assert [f["zero"] for f in named["features"]["features"]] == [False, True]
        assert named["features"]["features"][0]["l2"] == pytest.approx(
            float(np.linalg.norm(kernel[:, 0])))
        x_live = x.head(300).copy()
        x_live.loc[0, "amount"] = np.nan  # missing, not refused
        ids = monitor.log_batch(x_live, predictions=model.predict_proba(x_live.fillna(0)),
                                cohorts={"region": np.where(np.arange(300) % 2, "eu", "us")},
                                labels=y[:300], latency_ms=np.full(300, 2.5))
        assert monitor.flush(timeout=60)
        assert (monitor.stats.sent, monitor.stats.refused) == (300, 0)
    assert len(set(ids)) == 300
    assert sqlite_server.predictions("sk") == 300
    assert sqlite_server.labels("sk") == 300
    got = httpx2.get(f"{sqlite_server.url}/v1/models/sk").json()
    assert got["task"] == "binary_classification"
    # classes_ are sorted by scikit-learn: the second ("legit") is the positive class
    assert got["classes"] == ["fraud", "legit"]
    assert [f["name"] for f in got["features"]] == ["amount", "age"]
    [version] = httpx2.get(f"{sqlite_server.url}/v1/models/sk/versions").json()
    meta = version["metadata"]
    assert meta["regularization"] == {"type": "l1", "lambda": 2.0}
    assert meta["hyperparameters"]["C"] == 0.5 and meta["artifact_bytes"] > 0


def test_integer_classes_multiclass_rows_and_numpy_features(sqlite_server):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 3))
    y = rng.integers(0, 3, 200)
    model = LogisticRegression().fit(x, y)
    with Monitor(sqlite_server.url, model="multi", version="v1") as monitor:
        monitor.register_sklearn(model, feature_names=["a", "b", "c"])
        ids = monitor.log_batch(x, feature_names=["a", "b", "c"],
                                predictions=model.predict_proba(x))
        monitor.label_batch(ids, y)  # later, as ground truth arrives
        monitor.log(features=dict(zip("abc", x[0], strict=True)),
                    prediction=model.predict_proba(x[:1])[0], label=np.int64(y[0]))
        assert monitor.flush(timeout=60)
        assert (monitor.stats.sent, monitor.stats.refused) == (401, 0)
    assert httpx2.get(f"{sqlite_server.url}/v1/models/multi").json()["classes"] == ["0", "1", "2"]
    assert sqlite_server.labels("multi") == 201


def test_a_conflicting_registration_raises_with_the_services_details(sqlite_server):
    sqlite_server.register("conflict")
    monitor = Monitor(sqlite_server.url, model="conflict", version="v1")
    try:
        with pytest.raises(ModelmonError) as err:
            monitor.register_model(task="regression", features=["amount"])
        assert err.value.status == 409 and err.value.code == "conflict"
        assert {d["field"] for d in err.value.details} >= {"task"}
    finally:
        monitor.close()


def test_registration_carries_a_policy_and_opens_a_maintenance_window(sqlite_server):
    with Monitor(sqlite_server.url, model="nightly", version="v1") as monitor:
        monitor.register_model(task="regression", features=["amount"],
                               policy={"expected_interval_seconds": None, "page": False})
        monitor.register_version(maintenance_seconds=600)
        # a re-registration without a policy confirms the model and keeps its policy
        monitor.register_model(task="regression", features=["amount"])
    got = httpx2.get(f"{sqlite_server.url}/v1/models/nightly").json()["policy"]
    assert got["overrides"] == {"expected_interval_seconds": None, "page": False}
    windows = httpx2.get(f"{sqlite_server.url}/v1/models/nightly/maintenance").json()
    assert [w["open"] for w in windows] == [True]


def test_stats_exported_to_prometheus(sqlite_server):
    sqlite_server.register("prom")
    registry = CollectorRegistry()
    with Monitor(sqlite_server.url, model="prom", version="v1", max_queue=5,
                 flush_interval=60) as monitor:
        monitor.export_metrics(registry)
        for i in range(8):
            monitor.log(features={"amount": float(i)}, prediction={"score": 0.5})
        assert monitor.flush(timeout=60)

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"model": "prom", "version": "v1", **labels})

        assert sample("modelmon_client_records_total", outcome="queued") == 5
        assert sample("modelmon_client_records_total", outcome="sent") == 5
        assert sample("modelmon_client_records_total", outcome="dropped") == 3
        assert sample("modelmon_client_retries_total") == 0
        assert sample("modelmon_client_pending_records") == 0


def test_async_monitor_logs_from_coroutines_and_awaits_flush(sqlite_server):
    sqlite_server.register("aio")

    async def handler(monitor: AsyncMonitor, i: int) -> str:
        await asyncio.sleep(0)
        return monitor.log(features={"amount": float(i)}, prediction={"score": 0.5})

    async def main() -> tuple[list[str], bool]:
        async with AsyncMonitor(sqlite_server.url, model="aio", version="v1") as monitor:
            ids = await asyncio.gather(*(handler(monitor, i) for i in range(500)))
            flushed = await monitor.flush(timeout=60)
        return ids, flushed

    ids, flushed = asyncio.run(main())
    assert flushed
    assert sorted(sqlite_server.prediction_ids("aio")) == sorted(ids)


def test_register_sklearn_measures_and_sends_the_training_figures(sqlite_server):
    """``validation=(X_val, y_val)``: the version's validation error (overall and per cohort)
    and parameters are measured and registered, so the service's gap has its baseline; the
    figures can be set again until the first prediction, then 409."""
    x, y = training_data(600)
    model = LogisticRegression(C=0.1, l1_ratio=1.0, solver="saga", max_iter=2000).fit(
        x.head(400), y[:400])
    x_val, y_val = x.tail(200), y[400:]
    region = np.where(np.arange(200) % 3 == 0, "eu", "us")
    with Monitor(sqlite_server.url, model="gap", version="v1") as monitor:
        monitor.register_sklearn(model, cohort_keys=["region"], validation=(x_val, y_val),
                                 validation_cohorts={"region": region},
                                 training={"train_loss": 0.31})
        stored = httpx2.get(f"{sqlite_server.url}/v1/models/gap/versions/v1").json()
        training = stored["metadata"]["training"]
        wrong = model.predict(x_val) != y_val
        assert training["validation_error"] == pytest.approx(wrong.mean(), rel=1e-12)
        assert training["cohort_validation_error"] == pytest.approx(
            {"region=eu": wrong[region == "eu"].mean(), "region=us": wrong[region == "us"].mean()})
        assert training["validation_rows"] == 200 and training["train_loss"] == 0.31
        assert training["cohort_validation_rows"] == {"region=eu": 67, "region=us": 133}
        assert training["parameters"] == 3
        assert training["nonzero_parameters"] == int(np.count_nonzero(model.coef_)) + 1
        assert monitor.set_training({"validation_error": 0.2})["metadata"]["training"] == {
            "validation_error": 0.2}
        monitor.log(features={"amount": 1.0, "age": 30.0}, prediction=[0.4, 0.6],
                    cohorts={"region": "eu"})
        assert monitor.flush(timeout=60)
        with pytest.raises(ModelmonError) as refused:
            monitor.set_training({"validation_error": 0.1})
        assert refused.value.status == 409 and refused.value.code == "version_in_use"
