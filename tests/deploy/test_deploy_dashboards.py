"""Grafana dashboards and provisioning: valid JSON, fixed uids, the datasource, model and
version variables, and PromQL that promtool parses over catalogue metrics and recorded series.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    GRAFANA_PROVISIONING,
    catalogue_metrics,
    dashboard_exprs,
    load_yaml,
    metric_names,
    recording_rule_names,
    run,
    substitute,
)

PATHS = [DASHBOARDS_DIR / name for name in DASHBOARDS]
DS_REF = "${datasource}"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def test_dashboard_files() -> None:
    assert sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")) == sorted(DASHBOARDS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    d = _load(path)
    assert d["uid"] == f"modelmon-{path.stem}"
    assert 36 <= d["schemaVersion"] <= 41
    assert d["title"].startswith("modelmon / ")
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for name in ("model", "version"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == DS_REF
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query.startswith("label_values("), query
    assert 'model=~"$model"}' in variables["version"]["definition"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    panels = _panels(d)
    assert len(panels) >= 8
    for panel in panels:
        where = f"{path.name}: panel {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_REF}, where
        assert panel["targets"], where
        assert panel.get("description"), where
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DS_REF}, where
            assert target["expr"].strip(), where
    for ann in d["annotations"]["list"]:
        assert ann["datasource"] == {"type": "prometheus", "uid": DS_REF}


# The lint: every panel says its unit; every range function follows the dashboard's
# resolution ($__rate_interval) or range ($__range), never a fixed window that is too short
# for a long scrape interval or hides detail when zoomed in; the datasource is a variable.
RANGE_CALL = re.compile(r"\b(rate|irate|increase)\s*\(([^()\[]|\([^()]*\))*\[([^\]]+)\]")
UNITS = {"none", "short", "percentunit", "s", "ms", "bytes", "reqps", "x", "dateTimeAsIso"}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_dashboard_lint_units(path: Path) -> None:
    for panel in _panels(_load(path)):
        where = f"{path.name}: panel {panel['title']!r}"
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit in UNITS, f"{where}: unit {unit!r}"
        for override in panel["fieldConfig"].get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, f"{where}: override unit {prop['value']!r}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_dashboard_lint_rate_intervals(path: Path) -> None:
    exprs = dashboard_exprs(_load(path))
    for where, expr in exprs:
        for m in RANGE_CALL.finditer(expr):
            fn, window = m.group(1), m.group(3)
            allowed = {"$__rate_interval"} if fn in ("rate", "irate") else {
                "$__rate_interval", "$__range"}
            assert window in allowed, f"{path.name} {where}: {fn}(...[{window}]) in {expr}"
    assert RANGE_CALL.search("sum(rate(x{a=\"b\"}[5m]))").group(3) == "5m"  # the lint bites


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_dashboard_lint_datasource_and_job_variables(path: Path) -> None:
    d = _load(path)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert [v["name"] for v in d["templating"]["list"]][:2] == ["datasource", "job"]
    job = variables["job"]
    assert job["definition"] == "label_values(modelmon_build_info, job)"
    # "All" is the values found (modelmon, modelmon-worker), never every job in Prometheus
    assert job["includeAll"] and job.get("allValue") in (None, "")
    assert 'job=~"$job"' in variables["model"]["definition"]
    text = json.dumps(d)
    assert '"uid": "${datasource}"' in text and '"uid": "prometheus"' not in text
    for where, expr in dashboard_exprs(d):
        # each scraped series is filtered by job (recorded series and ALERTS are aggregated
        # without it)
        for name, selector in re.findall(r"(?<![\w:])(modelmon_[a-z0-9_]+|up)(?![\w:])(\{[^}]*\})?",
                                         expr):
            assert 'job=~"$job"' in selector, f"{path.name} {where}: {name}{selector}"
        if "instance" in variables and re.search(r"modelmon_(ingested|inference|job_runs|"
                                                 r"job_duration)|\bup\{", expr):
            assert 'instance=~"$instance"' in expr, f"{path.name} {where}: {expr}"


def test_oncall_filters_by_instance() -> None:
    variables = {v["name"]: v for v in _load(DASHBOARDS_DIR / "oncall.json")["templating"][
        "list"]}
    assert variables["instance"]["definition"] == (
        'label_values(modelmon_build_info{job=~"$job"}, instance)')


def test_uids_are_unique() -> None:
    uids = [_load(p)["uid"] for p in PATHS]
    assert len(uids) == len(set(uids))


def _all_exprs() -> list[tuple[str, str]]:
    return [(f"{p.name} {where}", expr) for p in PATHS for where, expr in dashboard_exprs(_load(p))]


def test_exprs_use_only_known_variables() -> None:
    for where, expr in _all_exprs():
        for var in re.findall(r"\$\{?(\w+)", expr):
            assert var in {"job", "instance", "model", "version", "feature",
                           "__rate_interval", "__range", "__interval"}, f"{where}: ${var}"
        assert "$datasource" not in expr


def test_exprs_select_catalogue_metrics_or_recorded_series() -> None:
    known = catalogue_metrics() | recording_rule_names() | {"ALERTS", "up"}
    for where, expr in _all_exprs():
        used = metric_names(substitute(expr))
        assert used, f"{where}: no metric in {expr!r}"
        assert not used - known, f"{where}: unknown {used - known} in {expr!r}"


def test_exprs_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every expr, with the template variables substituted, as a recording rule promtool parses.
    """
    exprs = _all_exprs()
    rules = "\n".join(
        f"      - record: dashboard_expr_{i}\n        expr: {json.dumps(substitute(e))}"
        for i, (_, e) in enumerate(exprs))
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(f"groups:\n  - name: dashboards\n    rules:\n{rules}\n")
    proc = run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_dashboards_cover_the_issue() -> None:
    text = {p.stem: p.read_text() for p in PATHS}
    assert "modelmon_check_state" in text["executive"]
    assert "model:modelmon_error_budget_burn" in text["executive"]
    assert "modelmon_weight_sparsity_ratio" in text["executive"]
    assert "modelmon_model_version_artifact_bytes" in text["executive"]
    assert "ALERTS" in text["oncall"]
    assert ("histogram_quantile(0.95, sum by (le, version) "
            "(rate(modelmon_inference_latency_seconds_bucket") in text["oncall"]
    assert "excess_decidable" in text["oncall"]
    assert "model_version_cohort:modelmon_cohort_mae:ratio_decidable" in text["oncall"]
    assert "modelmon_cohort_mae" in text["debug"] and "modelmon_cohort_rmse" in text["debug"]
    for metric in ("modelmon_feature_psi", "modelmon_feature_ks_statistic",
                   "modelmon_calibration_bin_observed_ratio",
                   "modelmon_calibration_bin_confidence_ratio", "modelmon_cohort_error_ratio",
                   "modelmon_calibration_oe_ratio", "modelmon_multivariate_pca_error_effect",
                   "modelmon_weight_l1", "modelmon_weight_l2"):
        assert metric in text["debug"], metric
    for name in ("executive", "debug"):
        assert "modelmon_generalization_gap" in text[name], name
    assert 'check=\\"generalization_gap\\"' in text["executive"]
    assert "modelmon_model_version_validation_error" in text["debug"]
    assert "modelmon_feature_importance_ratio" in text["debug"]
    assert "modelmon_version_nonzero_features" in text["debug"]
    for name, body in text.items():
        assert "modelmon_model_version_registered_timestamp_seconds" in body, name


def test_provisioning() -> None:
    (ds_file,) = (GRAFANA_PROVISIONING / "datasources").glob("*.yml")
    (source,) = load_yaml(ds_file)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (dash_file,) = (GRAFANA_PROVISIONING / "dashboards").glob("*.yml")
    (provider,) = load_yaml(dash_file)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
