"""The catalogue of what /metrics exports (observability/families.py) is the one the docs show
and the one a real scrape after demo traffic shows: same names, types, labels and help."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.cli import demo
from app.evaluation.checks import CHECKS
from app.jobs import runner
from app.main import create_app
from app.observability import families
from app.observability.docs import TABLES, render
from app.observability.families import FAMILIES, stored_result_families
from app.observability.quality import CHECK_OF, OF_FEATURE, SUBJECT_STATE
from app.settings import Settings
from app.storage import migrate
from tests.conftest import ROOT
from tests.deploy.deploy_support import catalogue_metrics
from tests.factories import regression_model

DOCS = ROOT / "docs" / "prometheus.md"


def test_the_docs_tables_are_the_ones_the_catalogue_renders():
    text = DOCS.read_text()
    assert all(begin in text and end in text for begin, end, _ in TABLES.values())
    assert render(text) == text, (
        "docs/prometheus.md's tables differ from app/observability/families.py: run "
        "`python scripts/docs-tables.py --write`")


def _documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of every row of the page's tables, read as a person would."""
    out = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\| `([a-z_:0-9]+)` \| ([a-z]+) \| (.*?) \| ", line)
        if m:
            assert m.group(1) not in out, f"{m.group(1)} documented twice"
            labels = tuple(re.findall(r"(?:^|, )`([a-z_]+)`", m.group(3)))
            out[m.group(1)] = (m.group(2), labels)
    return out


def test_every_family_is_documented_with_its_type_and_labels_and_nothing_else():
    documented = _documented()
    assert documented == {f.name: (f.type, f.labels) for f in FAMILIES.values()}
    # what the rules' and dashboards' tests read from the page is the catalogue too
    derived = {f"{f.name}_{s}" for f in FAMILIES.values() if f.type == "histogram"
               for s in ("bucket", "sum", "count")}
    assert catalogue_metrics() == {n for n in FAMILIES if n.startswith("modelmon_")} | {
        n for n in derived if n.startswith("modelmon_")}


def test_the_check_label_values_are_the_declared_checks():
    window = [c.name for c in CHECKS if c.job is not None]
    assert families.FAMILIES["modelmon_check_state"].values["check"] == tuple(window)
    assert set(window) == set(CHECK_OF.values())
    per_feature = {CHECK_OF[m] for m in SUBJECT_STATE if m in OF_FEATURE}
    assert set(FAMILIES["modelmon_feature_check_state"].values["check"]) == per_feature
    assert FAMILIES["modelmon_version_check_state"].values["check"] == tuple(
        c.name for c in CHECKS if c.job is None) == ("sparsity_jump", "norm_jump")


def test_a_stored_metric_declared_with_a_gauge_is_a_family_by_itself(monkeypatch):
    from app.evaluation.checks.declare import StoredMetric

    extra = {"cohort_lift": StoredMetric("cohorts", "cohort", "Lift per cohort.",
                                         "modelmon_cohort_lift", "cohort_error")}
    monkeypatch.setattr(families, "METRICS", {**families.METRICS, **extra})
    made = {f.name: f for f in stored_result_families()}
    f = made["modelmon_cohort_lift"]
    assert (f.type, f.labels, f.help, f.stored) == (
        "gauge", ("model", "version", "cohort_key", "cohort"), "Lift per cohort.",
        ("cohort_lift",))


# ------------------------------------------------------------------------- a real scrape

class _Api:
    """The demo's API client (app/cli/client.py), over the test client."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None,
             ctype: str = "application/json") -> Any:
        r = (self.client.post(path, json=body) if raw is None else
             self.client.post(path, content=raw, headers={"content-type": ctype}))
        assert r.status_code < 300, r.text
        return r.json()


def _demo_traffic(client: TestClient) -> None:
    """The demo's model, versions, weights and reference, steady then incident traffic with
    labels; a regression model with cohorts; a model that records undeclared features; a
    refused batch."""
    api, rng = _Api(client), np.random.default_rng(5)
    versions = demo.setup(api, "demo-fraud", False, rng)
    for seq in range(6):
        records, labels = demo.batch("demo-fraud", versions, rng, 150, seq, incident=seq >= 3)
        api.post("/v1/predictions", {"records": records})
        api.post("/v1/labels", {"records": labels})
    api.post("/v1/models", regression_model(policy={"unknown_features": "record"}))
    api.post("/v1/models/eta/versions", {"version": "v1"})
    now = datetime.now(UTC)
    eta = [{"model": "eta", "version": "v1", "prediction_id": f"e-{i}",
            "timestamp": (now - timedelta(seconds=i)).isoformat(),
            "features": {"distance": float(i), "weather": "rain"},
            "prediction": {"value": float(i)}, "cohorts": {"city": ("a", "b")[i % 2]},
            "label": float(i) + rng.normal()} for i in range(120)]
    api.post("/v1/predictions", {"records": eta})
    bad = {**eta[0], "prediction_id": "e-bad", "features": {"distance": "far"}}
    assert client.post("/v1/predictions", json={"records": [bad]}).status_code == 422


# Families demo traffic cannot produce, and why.
NOT_FROM_DEMO = {
    "modelmon_version_zeroed_feature_importance_ratio": "v2 zeroes x4 and x5, which carry no "
    "signal: they are not among v1's 5 most important features",
    "modelmon_model_version_validation_ece": "the demo registers no validation ECE with its "
    "versions' training figures",
    "modelmon_embedding_shift_effect": "the demo's models have no embedding feature "
    "(tests/api/test_embedding_api.py scrapes it)",
}


def _scraped(text: str) -> dict[str, tuple[str, tuple[str, ...], str, int]]:
    """name as exposed -> (type, labels, help, samples)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        labels: list[str] = []
        for s in fam.samples:
            labels += [k for k in s.labels if k != "le" and k not in labels]
        out[name] = (fam.type, tuple(labels), fam.documentation, len(fam.samples))
    return out


def test_a_real_scrape_after_demo_traffic_is_the_catalogue(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/m.db", job_catchup_windows=1,
                        metrics_cache_seconds=0)
    app = create_app(settings, run_scheduler=False)
    migrate.upgrade(app.state.engine)
    with TestClient(app) as client:
        _demo_traffic(client)
        later = datetime.now(UTC) + timedelta(seconds=settings.job_interval_seconds)
        runner.tick(app.state.engine, settings, now=later, on_done=app.state.metrics.job_done)
        text = client.get("/metrics").text
    app.state.engine.dispose()
    scraped = _scraped(text)
    for name, (type_, labels, help_, _) in scraped.items():
        f = FAMILIES.get(name)
        assert f is not None, f"{name} is exported but not in the catalogue"
        assert (type_, help_) == (f.type, f.help), name
        assert set(labels) <= set(f.labels), name
    present = {n for n, (*_, samples) in scraped.items() if samples}
    assert set(FAMILIES) - present == set(NOT_FROM_DEMO)
    for name in present:  # every label of a family with series is set
        assert set(scraped[name][1]) == set(FAMILIES[name].labels), name


def test_decided_families_name_their_deciders() -> None:
    """``decided()``: the decisions decide themselves, a stored figure names the check whose
    decision its row carries, and ``decided_by`` names a check decided when read or a policy
    family that exists; what no decision reads is not there."""
    out = families.decided()
    checks = {c.name for c in CHECKS}
    policy = {f.name for f in families.POLICY}
    for name, by in out.items():
        family = FAMILIES[name]
        if family.source is families.Source.DECISION:
            assert by == (name,)
        else:
            assert set(by) <= checks | policy, (name, by)
    assert out["modelmon_feature_psi"] == ("feature_drift",)
    assert out["modelmon_calibration_ece_ratio"] == ("calibration",)
    assert out["modelmon_version_sparsity_delta_ratio"] == ("sparsity_jump",)
    assert out["modelmon_model_last_prediction_timestamp_seconds"] == (
        "modelmon_model_expected_interval_seconds",)
    for name in ("modelmon_weight_l1", "modelmon_model_paging", "modelmon_build_info",
                 "modelmon_feature_importance_ratio"):
        assert name not in out, name
