"""Grafana dashboards and provisioning: valid JSON, fixed uids, the datasource, model and
version variables, PromQL that promtool parses over catalogue metrics and recorded series, and
colour from the decisions: no panel showing a decided quantity draws a line of its own.
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
    render_rules_module,
    rule_files,
    run,
    substitute,
)

from app.observability.families import FAMILIES, POLICY, Source, decided
from app.observability.quality import DECISION

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
        for var in re.findall(r"\$\{?([A-Za-z_]\w*)", expr):
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
                   "modelmon_embedding_shift_effect",
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


# ------------------------------------------------------------------ colour from the decisions

def _recorded_exprs() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for path in rule_files()
            for group in load_yaml(path)["groups"] for rule in group["rules"] or []
            if "record" in rule}


def decided_quantities() -> set[str]:
    """The series a dashboard shows that are decided (app/observability/families.py
    ``decided()``: the decisions, the figures the checks decide on, the families declared
    decided by a check or a policy gauge), and every recorded series computed from one."""
    names = set(decided())
    recorded = _recorded_exprs()
    while True:
        more = {r for r, expr in recorded.items() if metric_names(expr) & names} - names
        if not more:
            return names
        names |= more


DECIDED = decided_quantities()
STATE_VALUES = {str(v) for v in DECISION.values()}


def _colour_configs(panel: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, {"thresholds": .., "mappings": ..}) of a panel's defaults and overrides."""
    fc = panel.get("fieldConfig", {})
    out = [("defaults", fc.get("defaults", {}))]
    for override in fc.get("overrides", []):
        props = {p["id"]: p["value"] for p in override["properties"]}
        out.append((f"override {override['matcher']}", props))
    return out


def literal_lines(panel: dict[str, Any]) -> list[str]:
    """Every colour a panel sets by a number of its own: a threshold step past the base, a
    range or regex mapping, a value mapping of a value no decision state has."""
    out = []
    for where, config in _colour_configs(panel):
        steps = (config.get("thresholds") or {}).get("steps", [])
        out += [f"{where}: threshold {s['value']}" for s in steps if s.get("value") is not None]
        for mapping in config.get("mappings") or []:
            if mapping["type"] == "value":
                out += [f"{where}: value mapping {k}" for k in mapping["options"]
                        if k not in STATE_VALUES]
            elif mapping["type"] != "special":
                out.append(f"{where}: {mapping['type']} mapping {mapping['options']}")
    out += [f"options: threshold {s['value']}" for s in (panel.get("options", {}).get(
        "thresholds") or {}).get("steps", []) if s.get("value") is not None]
    return out


def _shown(panel: dict[str, Any]) -> set[str]:
    return {n for t in panel["targets"] for n in metric_names(substitute(t["expr"]))}


def test_decided_quantities_come_from_the_declarations() -> None:
    # the decisions, every figure a stored check decides on, the version deltas and freshness
    assert {f.name for f in FAMILIES.values() if f.source is Source.DECISION} <= DECIDED
    for name in ("modelmon_feature_psi", "modelmon_feature_ks_statistic",
                 "modelmon_prediction_psi", "modelmon_calibration_ece_ratio",
                 "modelmon_cohort_error_ratio", "modelmon_cohort_mae",
                 "modelmon_generalization_gap", "modelmon_label_coverage_ratio",
                 "modelmon_version_sparsity_delta_ratio",
                 "modelmon_version_l1_relative_change_ratio",
                 "modelmon_model_last_prediction_timestamp_seconds",
                 "model_version_cohort:modelmon_cohort_error_ratio:excess_decidable"):
        assert name in DECIDED, name
    # figures no decision reads are not
    for name in ("modelmon_weight_l1", "modelmon_feature_importance_ratio",
                 "modelmon_job_last_success_timestamp_seconds", "modelmon_model_paging"):
        assert name not in DECIDED, name


def test_the_literal_line_lint_bites() -> None:
    psi = {"targets": [{"expr": 'max by (feature) (modelmon_feature_psi{model=~"$model"})'}],
           "fieldConfig": {"defaults": {"thresholds": {"steps": [
               {"color": "green", "value": None}, {"color": "orange", "value": 0.1}]}},
               "overrides": []}}
    assert _shown(psi) & DECIDED
    assert literal_lines(psi) == ["defaults: threshold 0.1"]
    psi["fieldConfig"]["defaults"]["thresholds"]["steps"].pop()
    assert literal_lines(psi) == []
    psi["fieldConfig"]["overrides"].append({"matcher": {"id": "byName", "options": "PSI"},
                                            "properties": [{"id": "mappings", "value": [
                                                {"type": "range", "options": {
                                                    "from": 0.25, "to": None}}]}]})
    assert len(literal_lines(psi)) == 1
    state = {"fieldConfig": {"defaults": {"mappings": [{"type": "value", "options": {
        "0": {}, "1": {}, "2": {}, "0.25": {}}}]}}}
    assert literal_lines(state) == ["defaults: value mapping 0.25"]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_no_literal_line_on_a_decided_quantity(path: Path) -> None:
    """A panel that shows a decision or a figure decided on is coloured by the decisions
    (value mappings of the states) and shows the policy beside it, never by a line of its
    own: the pages and the dashboards cannot disagree."""
    checked = 0
    for panel in _panels(_load(path)):
        if _shown(panel) & DECIDED:
            checked += 1
            assert literal_lines(panel) == [], f"{path.name}: panel {panel['title']!r}"
    assert checked >= 3, path.name


def test_the_decisions_and_the_policy_are_on_the_dashboards() -> None:
    exprs = "\n".join(e for _, e in _all_exprs())
    for f in FAMILIES.values():
        if f.source is Source.DECISION or f in POLICY:
            assert f.name in exprs, f.name
    # importance beside drift: one table shows the decision, the figure and the importance
    for name in ("oncall", "debug"):
        assert any(_shown(p) >= {"modelmon_feature_check_state", "modelmon_feature_psi",
                                 "modelmon_feature_importance_ratio"}
                   for p in _panels(_load(DASHBOARDS_DIR / f"{name}.json"))), name
    for path in PATHS:
        for panel in _panels(_load(path)):
            if _shown(panel) & {f.name for f in FAMILIES.values()
                                if f.source is Source.DECISION}:
                mapped = [m for _, c in _colour_configs(panel) for m in c.get("mappings") or []]
                assert mapped, f"{path.name}: {panel['title']!r} shows states unmapped"


PAGES_BASE = render_rules_module().DEFAULT_PAGES_BASE
PAGE_LINK = re.compile(r"\$\{pages\}(/models/\$\{(__data\.fields|__field\.labels)\.model\}"
                       r"/versions/\$\{\2\.version\}(/features/\$\{\2\.feature\})?)?")


# The firing alerts' table computes each alert's page path as a label (`page`), as the rules
# build page_url (the end-to-end test holds the two equal on real alerts).
ALERT_PAGE_LINK = "${pages}${__data.fields.page}"
ALERT_PAGE_EXPR = ('"page", "/", "model", "version", "feature"), "page", '
                   '"/models/$1/versions/$2/features/$3", "page", "([^/]+)/([^/]+)/([^/]+)"), '
                   '"page", "/models/$1/versions/$2", "page", "([^/]+)/([^/]+)/"), '
                   '"page", "", "page", "[^/]*//")')


def _links(panel: dict[str, Any]) -> list[dict[str, Any]]:
    return [link for _, c in _colour_configs(panel) for link in c.get("links") or []]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_links_to_the_pages(path: Path) -> None:
    d = _load(path)
    pages = {v["name"]: v for v in d["templating"]["list"]}["pages"]
    # the same external URL the alert rules' page_url are rendered on
    assert (pages["type"], pages["query"]) == ("textbox", PAGES_BASE)
    assert any(link["url"] == "${pages}" for link in d["links"])
    urls = [link["url"] for p in _panels(d) for link in _links(p)]
    page_urls = [u for u in urls if u.startswith("${pages}")]
    assert page_urls, path.name
    for url in page_urls:  # the shape of the alerts' page_url (tests/deploy/test_deploy_rules)
        assert PAGE_LINK.fullmatch(url) or url == ALERT_PAGE_LINK, url
    for url in urls:
        assert url.startswith(("${pages}", "/d/modelmon-")), url


def test_firing_alerts_link_the_debug_dashboard_and_the_page() -> None:
    alerts = next(p for p in _panels(_load(DASHBOARDS_DIR / "oncall.json"))
                  if "ALERTS" in _shown(p) and p["type"] == "table")
    urls = [link["url"] for link in _links(alerts)]
    assert any(u.startswith("/d/modelmon-debug/") and "var-model=${__data.fields.model}" in u
               and "var-version=${__data.fields.version}" in u for u in urls), urls
    assert ALERT_PAGE_LINK in urls
    (target,) = alerts["targets"]
    assert ALERT_PAGE_EXPR in target["expr"]
    # nothing hides the column the link reads
    for step in alerts.get("transformations", []):
        assert "page" not in step["options"].get("excludeByName", {})
