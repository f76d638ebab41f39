"""/metrics: service counters per process, model quality from stored results (the same on
every replica), bounded label values, an optional bearer token."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.jobs import runner
from app.main import create_app
from app.settings import Settings
from tests.conftest import ROOT
from tests.factories import label, prediction, register
from tests.jobs_data import drift_model, latest_window, post_all, reference_csv, traffic


def sample(app, name: str, labels: dict[str, str] | None = None) -> float | None:
    return app.state.registry.get_sample_value(name, labels or {})


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_ingest_counters_latency_and_slo_counters(app, client):
    register(client)
    recs = [prediction(0, latency_ms=4.0, prediction={"score": 0.9}),       # says fraud
            prediction(1, latency_ms=40.0, prediction={"score": 0.1}),      # says legit
            prediction(2, prediction={"score": 0.7}, label="legit")]        # inline, wrong
    assert client.post("/v1/predictions", json={"records": recs}).status_code == 200
    assert client.post("/v1/predictions", json={"records": recs[:1]}).status_code == 200
    bad = client.post("/v1/predictions", json={"records": [prediction(9, model="ghost")]})
    assert bad.status_code == 404
    m = {"model": "fraud"}
    assert sample(app, "modelmon_ingested_records_total", {**m, "outcome": "accepted"}) == 3
    assert sample(app, "modelmon_ingested_records_total", {**m, "outcome": "duplicate"}) == 1
    assert sample(app, "modelmon_ingested_records_total",
                  {"model": "__unknown__", "outcome": "rejected"}) == 1
    lat = {"model": "fraud", "version": "v1"}
    assert sample(app, "modelmon_inference_latency_seconds_count", lat) == 2
    assert sample(app, "modelmon_inference_latency_seconds_sum", lat) == pytest.approx(0.044)
    assert sample(app, "modelmon_inference_latency_seconds_bucket", {**lat, "le": "0.005"}) == 1

    # labels: p-0 right (fraud), p-1 wrong (fraud vs legit), p-7 before its prediction
    r = client.post("/v1/labels", json={"records": [label(0, value="fraud"),
                                                    label(1, value="fraud"), label(7)]})
    assert r.json() == {"matched": 2, "pending": 1, "duplicates": 0}
    assert sample(app, "modelmon_ingested_labels_total", {**m, "outcome": "matched"}) == 2
    assert sample(app, "modelmon_ingested_labels_total", {**m, "outcome": "pending"}) == 1
    # p-7 arrives: its waiting label completes a pair (score 0.2 -> legit, label fraud: wrong)
    client.post("/v1/predictions", json={"records": [prediction(7, prediction={"score": 0.2})]})
    s = scrape(client)
    assert s[("modelmon_labeled_predictions_total", (("model", "fraud"),))] == 4
    assert s[("modelmon_prediction_errors_total", (("model", "fraud"),))] == 3
    assert s[("modelmon_build_info", (("version", "0.1.0"),))] == 1
    assert ("modelmon_model_last_prediction_timestamp_seconds", (("model", "fraud"),)) in s
    route = (("code", "200"), ("method", "POST"), ("route", "/v1/predictions"))
    assert s[("modelmon_http_request_duration_seconds_count", route)] >= 3


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1, metrics_cache_seconds=0,
                    metrics_max_features=5, metrics_max_cohorts=2, metrics_max_layers=2)


def test_quality_metrics_equal_stored_results_on_every_replica(app, client, engine, settings):
    rng = np.random.default_rng(8)
    assert client.post("/v1/models", json=drift_model()).status_code == 201
    for v, lam in (("v1", 0.01), ("v2", 0.1)):
        client.post("/v1/models/credit/versions", json={
            "version": v, "metadata": {"regularization": {"type": "l1", "lambda": lam},
                                       "artifact_bytes": 1000}})
    client.post("/v1/models/credit/versions/v1/reference", content=reference_csv(rng, 2000),
                headers={"content-type": "text/csv"})
    start, end = latest_window()
    records, _, y, _ = traffic(rng, 1500, start, end, shifted=("f3",))
    post_all(client, "/v1/predictions", records)
    post_all(client, "/v1/labels", [{"model": "credit", "prediction_id": r["prediction_id"],
                                     "label": "bad" if y[i] else "good",
                                     "timestamp": r["timestamp"]}
                                    for i, r in enumerate(records)])
    for v, zeros in (("v1", 2), ("v2", 6)):
        client.post(f"/v1/models/credit/versions/{v}/weights", json={"tensors": [
            {"name": f"layer{k}", "shape": [10], "count": 10, "zeros": zeros if k == 0 else 0,
             "l1": 5.0, "l2": 2.0, "max_abs": 1.0, "mean": 0.1, "std": 0.5} for k in range(4)]})
    assert runner.tick(engine, settings, now=end) == {"success": 4}

    s = scrape(client)
    drift = client.get("/v1/models/credit/reports/drift",
                       params={"start": start.isoformat(), "end": end.isoformat()}).json()
    f3 = next(f for f in drift["versions"][0]["features"] if f["feature"] == "f3")
    key = (("feature", "f3"), ("model", "credit"), ("version", "v1"))
    assert s[("modelmon_feature_psi", key)] == pytest.approx(f3["psi"])
    # 21 features, at most 5 label values: the 4 worst and __other__
    features = {dict(k)["feature"] for (n, k) in s if n == "modelmon_feature_psi"}
    assert len(features) == 5 and "__other__" in features and "f3" in features
    cohorts = {dict(k)["cohort"] for (n, k) in s if n == "modelmon_cohort_error_ratio"}
    assert len(cohorts) == 2 and "__other__" in cohorts and "north" in cohorts
    assert s[("modelmon_feature_ks_pvalue", key)] < 0.05  # f3 is shifted: significant
    mv = (("model", "credit"), ("version", "v1"))
    assert s[("modelmon_check_state", (("check", "feature_drift"), *mv))] == 2
    assert s[("modelmon_label_coverage_ratio", mv)] == 1.0
    assert ("modelmon_calibration_ece_ratio", mv) in s
    assert ("modelmon_calibration_bin_observed_ratio", (("bin", "0.3"), *mv)) in s
    assert s[("modelmon_job_last_run_failed", (("job_name", "drift"), ("model", "credit")))] == 0
    assert s[("modelmon_job_interval_seconds", (("job_name", "drift"),))] == 300
    assert s[("modelmon_version_sparsity_delta_ratio",
              (("base_version", "v1"), ("model", "credit"), ("version", "v2")))] == \
        pytest.approx(0.1)
    layers = {dict(k)["layer"] for (n, k) in s if n == "modelmon_weight_sparsity_ratio"
              and dict(k)["version"] == "v2"}
    assert layers == {"__all__", "layer0", "__other__"}
    assert s[("modelmon_model_version_registered_timestamp_seconds",
              (("model", "credit"), ("regularization", "l1"), ("version", "v2")))] > 0
    assert s[("modelmon_labeled_predictions_total", (("model", "credit"),))] == 1500

    # a second replica on the same database shows the same model-quality values
    other = create_app(settings, run_scheduler=False)
    with TestClient(other) as c2:
        s2 = scrape(c2)
    other.state.engine.dispose()
    quality = {k: v for k, v in s.items() if not k[0].startswith(("modelmon_http",
               "modelmon_ingested", "modelmon_inference", "modelmon_job_runs",
               "modelmon_job_duration", "modelmon_database_errors", "python_", "process_"))}
    assert quality and all(s2[k] == v for k, v in quality.items())


def test_metrics_bearer_token(db_url):
    app = create_app(Settings(database_url=db_url, metrics_token="s3cret"), run_scheduler=False)
    with TestClient(app) as c:
        r = c.get("/metrics")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert c.get("/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
        ok = c.get("/metrics", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "modelmon_build_info" in ok.text
    app.state.engine.dispose()


def test_scrape_survives_an_unreachable_database(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/none/x.db"),
                     run_scheduler=False)
    with TestClient(app) as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and "modelmon_build_info" in r.text
    app.state.engine.dispose()


def test_quality_families_are_bounded_per_model_and_right():
    """100 models x 2 versions x 30 features x 10 cohorts: every model keeps its own features
    up to the limit (the rest folded per model into __other__), values intact."""
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_metrics import snapshot

    from app.observability.quality import OTHER, build_families
    from app.storage.snapshot import MetricsSnapshot

    fams = {f.name: f for f in build_families(MetricsSnapshot(**snapshot(100, 30, 10)),
                                              {"features": 10, "cohorts": 5, "layers": 10},
                                              300.0)}
    psi = fams["modelmon_feature_psi"].samples
    per_model: dict[tuple[str, str], set[str]] = {}
    for s in psi:
        per_model.setdefault((s.labels["model"], s.labels["version"]), set()).add(
            s.labels["feature"])
    assert len(per_model) == 200
    assert all(len(f) == 10 and OTHER in f for f in per_model.values())
    # the kept features are the worst (highest PSI) ones, with their own values
    kept = {s.labels["feature"]: s.value for s in psi
            if s.labels["model"] == "model7" and s.labels["version"] == "v2"}
    assert kept["f29"] == pytest.approx(0.29) and kept[OTHER] == pytest.approx(0.20)
    cohorts = fams["modelmon_cohort_error_ratio"].samples
    assert len(cohorts) == 200 * 5


def test_observe_many_equals_one_observe_per_value():
    from prometheus_client import CollectorRegistry, Histogram

    from app.observability.families import LATENCY_BUCKETS
    from app.observability.metrics import observe_many

    rng = np.random.default_rng(3)
    # bounds themselves (a value equal to a bound belongs to it), beyond the last, zero
    values = [*LATENCY_BUCKETS, 0.0, 99.0, *rng.exponential(0.05, 500).tolist()]
    registry = CollectorRegistry()
    one = Histogram("one", "", ["m"], buckets=LATENCY_BUCKETS, registry=registry)
    many = Histogram("many", "", ["m"], buckets=LATENCY_BUCKETS, registry=registry)
    for v in values:
        one.labels("a").observe(v)
    observe_many(many.labels("a"), values[:100])
    observe_many(many.labels("a"), values[100:])
    for le in [*map(str, LATENCY_BUCKETS), "+Inf"]:
        expected = registry.get_sample_value("one_bucket", {"m": "a", "le": le})
        assert registry.get_sample_value("many_bucket", {"m": "a", "le": le}) == expected, le
    assert registry.get_sample_value("many_count", {"m": "a"}) == len(values)
    assert registry.get_sample_value("many_sum", {"m": "a"}) == pytest.approx(
        registry.get_sample_value("one_sum", {"m": "a"}), rel=1e-12)


def test_job_state_in_the_snapshot_is_the_latest_of_a_long_history(client, engine):
    """Per (job, model) the snapshot gives the last success (latest finish, also of a window
    caught up late) and whether the last run failed, read from the newest rows whatever the
    history kept before them."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from app.observability.metrics import JOBS
    from app.storage.snapshot import load_snapshot
    from app.storage.tables import job_runs

    register(client)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)

    def run(i: int, status: str, finished: int, job: str = "drift") -> dict:
        return {"job": job, "model_id": 1, "window_start": t0 + timedelta(minutes=5 * i),
                "window_end": t0 + timedelta(minutes=5 * i + 60), "status": status,
                "started_at": t0 + timedelta(minutes=finished),
                "finished_at": t0 + timedelta(minutes=finished), "error": None, "worker": "w"}

    def state() -> tuple[dict, dict]:
        snap = load_snapshot(engine, max_result_age_seconds=3600, max_versions=3, jobs=JOBS)
        return snap.job_last_success, snap.job_last_failed

    history = [run(i, "success", 5 * i + 61) for i in range(2000)]
    history.append(run(-5, "success", 5 * 2000 + 70))  # an old window caught up last
    history.append(run(2000, "failure", 5 * 2000 + 80))
    with engine.begin() as conn:
        conn.execute(insert(job_runs), history)
        conn.execute(insert(job_runs), [run(0, "success", 30, job="labels")])
    ok, failed = state()
    assert ok == {("drift", "fraud"): (t0 + timedelta(minutes=5 * 2000 + 70)).timestamp(),
                  ("labels", "fraud"): (t0 + timedelta(minutes=30)).timestamp()}
    assert failed == {("drift", "fraud"): True, ("labels", "fraud"): False}
    with engine.begin() as conn:
        conn.execute(insert(job_runs), [run(2001, "success", 5 * 2000 + 90)])
    assert state()[1] == {("drift", "fraud"): False, ("labels", "fraud"): False}


def test_training_figures_and_version_counts_are_exported(client):
    """A version's registered training block as gauges, with the validation gap computed,
    per-cohort validation errors, and the number of versions per model."""
    register(client, versions=("v1",))
    training = {"train_loss": 0.2, "validation_loss": 0.35, "penalty_loss": 0.05,
                "validation_error": 0.1, "validation_ece": 0.02, "train_rows": 800,
                "validation_rows": 200, "parameters": 50, "nonzero_parameters": 12,
                "cohort_validation_error": {"region=eu": 0.12, "region=us": 0.08}}
    assert client.post("/v1/models/fraud/versions", json={
        "version": "v2", "metadata": {"training": training}}).status_code == 201
    s = scrape(client)

    def key(name: str, labels: dict) -> tuple:
        return (name, tuple(sorted(labels.items())))

    v2 = {"model": "fraud", "version": "v2"}
    for field in ("train_loss", "validation_loss", "penalty_loss", "validation_error",
                "validation_ece", "train_rows", "validation_rows", "parameters",
                "nonzero_parameters"):
        assert s[key("modelmon_model_version_" + field, v2)] == training[field], field
    assert s[key("modelmon_model_version_validation_gap", v2)] == pytest.approx(0.15)
    assert s[key("modelmon_model_version_cohort_validation_error",
                 {**v2, "cohort_key": "region", "cohort": "eu"})] == 0.12
    assert key("modelmon_model_version_train_loss", {**v2, "version": "v1"}) not in s
    assert s[key("modelmon_model_versions", {"model": "fraud"})] == 2


def test_refused_feature_values_are_counted_per_declared_feature(app, client):
    register(client)
    bad = [prediction(0, features={"amount": "lots", "country": "DE"}),
           prediction(1, features={"amount": 3.0, "zip": "10115"}),
           prediction(2, features={"amount": True}),
           prediction(3)]
    r = client.post("/v1/predictions", json={"records": bad})
    assert r.status_code == 422
    fields = sorted((d["index"], d["field"]) for d in r.json()["details"])
    assert fields == [(0, "features.amount"), (1, "features.zip"), (2, "features.amount")]
    refused = "modelmon_ingest_refused_values_total"
    assert sample(app, refused, {"model": "fraud", "feature": "amount"}) == 2
    assert sample(app, refused, {"model": "fraud", "feature": "__undeclared__"}) == 1
    assert sample(app, refused, {"model": "fraud", "feature": "country"}) is None
    assert sample(app, "modelmon_ingested_records_total",
                  {"model": "fraud", "outcome": "rejected"}) == 4
    # labels refused for their own reasons count no feature
    client.post("/v1/labels", json={"records": [label(0, value="nonsense")]})
    assert sample(app, refused, {"model": "fraud", "feature": "amount"}) == 2


def test_feature_importance_nonzero_features_and_zeroed_top_features(client):
    """Per-feature importance (the 4 largest and __other__ under a limit of 5), non-zero
    features per version, and the base's top-5 feature that the next version zeroed."""
    names = [f"f{i}" for i in range(8)]
    assert client.post("/v1/models", json={
        "name": "wide", "task": "regression", "cohort_keys": [],
        "features": [{"name": n, "type": "numeric"} for n in names]}).status_code == 201
    import io

    coefs = {"v1": [8.0, 7, 6, 5, 4, 3, 2, 1], "v2": [8.0, 0, 6, 5, 4, 3, 0, 1]}
    for v, coef in coefs.items():
        assert client.post("/v1/models/wide/versions", json={"version": v}).status_code == 201
        buf = io.BytesIO()
        np.savez(buf, coef=np.array(coef))
        r = client.post(f"/v1/models/wide/versions/{v}/weights", content=buf.getvalue(),
                        headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    s = scrape(client)

    def key(name: str, **labels: str) -> tuple:
        return (name, tuple(sorted({"model": "wide", **labels}.items())))

    assert s[key("modelmon_version_nonzero_features", version="v1")] == 8
    assert s[key("modelmon_version_nonzero_features", version="v2")] == 6
    v1 = {n: s[key("modelmon_feature_importance_ratio", version="v1", feature=n)]
          for n in ("f0", "f1", "f2", "f3", "__other__")}
    assert v1 == pytest.approx({"f0": 8 / 36, "f1": 7 / 36, "f2": 6 / 36, "f3": 5 / 36,
                                "__other__": 10 / 36})
    assert key("modelmon_feature_importance_ratio", version="v1", feature="f4") not in s
    assert s[key("modelmon_feature_importance_ratio", version="v2", feature="__other__")] == (
        pytest.approx(4 / 27))
    zeroed = {k: v for k, v in s.items()
              if k[0] == "modelmon_version_zeroed_feature_importance_ratio"}
    # f6 was zeroed too, but it was not among v1's top 5
    assert zeroed == {key("modelmon_version_zeroed_feature_importance_ratio", version="v2",
                          base_version="v1", feature="f1"): pytest.approx(7 / 36)}


def test_many_stored_cohorts_are_read_as_the_exported_worst_and_fold_alike(client, engine):
    """3,000 cohorts of one key in the latest window (more than the service writes itself):
    the snapshot reads only the worst few per key and version, and /metrics exports exactly
    what folding every row exported (the worst cohorts, the rest as __other__ with the worst
    folded value and its decision), NULL values last."""
    from datetime import UTC, datetime, timedelta

    from prometheus_client.core import GaugeMetricFamily  # noqa: F401
    from sqlalchemy import insert

    from app.observability.metrics import JOBS
    from app.observability.quality import build_families
    from app.storage.snapshot import load_snapshot
    from app.storage.tables import metric_results

    register(client)
    end = datetime.now(UTC).replace(microsecond=0)
    rows = [{"job": "cohorts", "model_id": 1, "version_id": 1, "metric": "cohort_error_ratio",
             "subject": f"{key}=c{i:05d}", "window_start": end - timedelta(hours=1),
             "window_end": end, "n": 100 + i,
             "value": None if i % 97 == 0 else ((i * 7919) % 3001) / 3001,
             "decision": ("critical" if i % 11 == 0 else "ok"), "method": "fisher",
             "detail": None, "computed_at": end}
            for key, count in (("region", 3000), ("tier", 5)) for i in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(metric_results), rows)
    limits = {"features": 50, "cohorts": 20, "layers": 100}

    def exported(max_cohorts):
        snap = load_snapshot(engine, max_result_age_seconds=3600, max_versions=3, jobs=JOBS,
                             max_cohorts=max_cohorts)
        fams = build_families(snap, limits, 300.0)
        return snap, sorted((f.name, tuple(sorted(s.labels.items())), s.value)
                            for f in fams for s in f.samples
                            if f.name.startswith("modelmon_cohort"))

    all_rows, everything = exported(None)
    few_rows, bounded = exported(20)
    assert len(all_rows.results) == 3005 and len(few_rows.results) == 25
    assert bounded == everything
    regions = {dict(labels)["cohort"] for _, labels, _ in bounded
               if dict(labels)["cohort_key"] == "region"}
    assert len(regions) == 20 and "__other__" in regions
