"""Alert and recording rules: promtool checks and unit tests, and the conventions every alert
keeps (severity, annotations, a runbook section, a firing and a quiet unit test)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from deploy_support import (
    CATALOGUE,
    PROM_CONFIG,
    ROOT,
    RULES_DIR,
    RUNBOOKS,
    alert_rules,
    catalogue_metrics,
    load_yaml,
    markdown_anchors,
    metric_names,
    recording_rule_names,
    render_rules_module,
    rule_files,
    rule_test_files,
    run,
)

RULE_FILES = rule_files()
RENDER = render_rules_module()
RUNBOOK_BASE = RENDER.DEFAULT_RUNBOOK_BASE
PAGES_BASE = RENDER.DEFAULT_PAGES_BASE
TEST_FILES = rule_test_files()
ALERTS = alert_rules()
ALERT_NAMES = sorted({r["alert"] for r in ALERTS})
# Supplied by operators in modelmon-slo.yml to override one model's objective; none ship.
OPTIONAL_SERIES = {"model:modelmon_slo_objective_override:ratio"}


def test_rules_and_tests_exist() -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert TEST_FILES, "no promtool test files in deploy/prometheus/tests"
    assert len(ALERT_NAMES) >= 15, ALERT_NAMES


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    proc = run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_check_config(promtool: str) -> None:
    proc = run([promtool, "check", "config", str(PROM_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_loads_every_rule_file() -> None:
    config = load_yaml(PROM_CONFIG)
    globs = config["rule_files"]
    loaded = {p for g in globs for p in PROM_CONFIG.parent.glob(g)}
    assert set(RULE_FILES) <= loaded, f"rule files not matched by {globs}"


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool: str, path: Path) -> None:
    proc = run([promtool, "test", "rules", path.name], cwd=path.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_unit_tests_load_every_rule_file(path: Path) -> None:
    listed = {(path.parent / f).resolve() for f in load_yaml(path)["rule_files"]}
    missing = {p.name for p in RULE_FILES} - {p.name for p in listed}
    assert not missing, f"{path.name} does not load {sorted(missing)}"


@pytest.mark.parametrize("rule", ALERTS, ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_conventions(rule: dict) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Modelmon[A-Z][A-Za-z0-9]+", name), name
    assert rule["labels"]["severity"] in {"critical", "warning"}
    ann = rule["annotations"]
    assert set(ann) >= {"summary", "description", "runbook_url"}, ann
    assert "{{" not in ann["summary"], "summary is a fixed sentence"
    assert "$labels" in ann["description"] or "$value" in ann["description"]
    assert re.search(r'printf "%\.2f" \$value', ann["description"]), ann["description"]
    # absolute (a pager opens it), on the base scripts/render-rules.py renders
    assert ann["runbook_url"] == f"{RUNBOOK_BASE}#{name.lower()}"
    # an alert about a model links the report page of its feature, version or model
    assert ann.get("page_url") == _page_url(_alert_labels(rule)), name
    # `for:` everywhere: a single evaluation never pages.
    assert rule.get("for"), f"{name} has no for:"


def _alert_labels(rule: dict) -> set[str]:
    """The labels an alert's series carry: its first aggregation's `by (...)`, or those of
    the recorded series it reads (the burn rates are by model)."""
    by = re.search(r"\bby \(([^)]*)\)", rule["expr"])
    if by:
        return {label.strip() for label in by.group(1).split(",")}
    return {"model"} if re.search(r"\bmodel:modelmon_", rule["expr"]) else set()


def _page_url(labels: set[str] | dict[str, str]) -> str | None:
    """The page an alert with these labels links (labels as a set: the rule's template; as a
    dict: a firing alert's URL), None for an alert about no model."""
    def value(label: str) -> str:
        return labels[label] if isinstance(labels, dict) else f"{{{{ $labels.{label} }}}}"
    if "model" not in labels:
        return None
    path = ""
    if "version" in labels:
        path = f"/models/{value('model')}/versions/{value('version')}"
        if "feature" in labels:
            path += f"/features/{value('feature')}"
    return PAGES_BASE + path


def test_every_model_quality_alert_links_its_page() -> None:
    # the alerts the pages exist for: per feature, per version, per model
    urls = {r["alert"]: r["annotations"].get("page_url", "") for r in ALERTS}
    assert urls["ModelmonFeatureDriftHigh"].endswith(
        "/models/{{ $labels.model }}/versions/{{ $labels.version }}/features/"
        "{{ $labels.feature }}")
    for name in ("ModelmonPredictionDriftHigh", "ModelmonCalibrationErrorHigh",
                 "ModelmonCohortErrorRegression", "ModelmonGeneralizationGapHigh",
                 "ModelmonVersionSparsityJump"):
        assert urls[name].endswith("/models/{{ $labels.model }}/versions/{{ $labels.version }}"
                                   ), name
    assert urls["ModelmonNoPredictions"] == PAGES_BASE
    assert "page_url" not in next(r for r in ALERTS if r["alert"] == "ModelmonServiceDown")[
        "annotations"]
    assert _page_url({"model": "m", "version": "v", "feature": "f"}) == (
        f"{PAGES_BASE}/models/m/versions/v/features/f")


def test_alerts_at_two_thresholds_share_one_name_and_summary() -> None:
    by_name: dict[str, list[dict]] = defaultdict(list)
    for rule in ALERTS:
        by_name[rule["alert"]].append(rule)
    for name, rules in by_name.items():
        severities = [r["labels"]["severity"] for r in rules]
        assert len(severities) == len(set(severities)), f"{name}: {severities}"
        assert len({r["annotations"]["summary"] for r in rules}) == 1, name
        assert len({r["_file"] for r in rules}) == 1, name


def test_every_alert_has_a_runbook_section() -> None:
    anchors = markdown_anchors(RUNBOOKS)
    missing = [n for n in ALERT_NAMES if n.lower() not in anchors]
    assert not missing, f"no section in {RUNBOOKS.relative_to(ROOT)} for {missing}"
    # and no section for an alert that does not exist
    sections = {a for a in anchors if a.startswith("modelmon")}
    assert sections == {n.lower() for n in ALERT_NAMES}


def _unit_cases() -> dict[str, dict[str, set[str]]]:
    """alertname -> {"firing": {severities}, "quiet": {test names}} over every test file."""
    cases: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"firing": set(), "quiet": set()})
    for path in TEST_FILES:
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test") or []:
                name = case["alertname"]
                expected = case.get("exp_alerts") or []
                if not expected:
                    cases[name]["quiet"].add(f"{path.name}: {test['name']}")
                for alert in expected:
                    labels = alert.get("exp_labels") or {}
                    anns = alert.get("exp_annotations") or {}
                    assert {"summary", "description", "runbook_url"} <= set(anns), (
                        f"{path.name}: {name} case does not assert every annotation")
                    assert "severity" in labels, f"{path.name}: {name} case has no severity"
                    assert anns.get("page_url") == _page_url(labels), (
                        f"{path.name}: {name} case does not assert its page_url")
                    cases[name]["firing"].add(labels["severity"])
    return cases


def test_every_alert_fires_and_stays_quiet_in_a_unit_test() -> None:
    cases = _unit_cases()
    unknown = set(cases) - set(ALERT_NAMES)
    assert not unknown, f"unit tests for alerts that do not exist: {unknown}"
    for name in ALERT_NAMES:
        severities = {r["labels"]["severity"] for r in ALERTS if r["alert"] == name}
        assert cases[name]["firing"] >= severities, (
            f"{name}: no firing unit test for severity {severities - cases[name]['firing']}")
        assert cases[name]["quiet"], f"{name}: no unit test in which it does not fire"


def test_rules_use_catalogue_metrics_only() -> None:
    known = catalogue_metrics() | recording_rule_names() | {"up"} | OPTIONAL_SERIES
    assert "modelmon_feature_psi" in known and len(catalogue_metrics()) > 30, CATALOGUE
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                used = metric_names(rule["expr"])
                assert used or rule["expr"].startswith("vector("), rule["expr"]
                unknown = used - known
                assert not unknown, (
                    f"{path.name} {rule.get('alert') or rule.get('record')}: {unknown} are "
                    f"neither in docs/prometheus.md nor recorded by a rule")


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name in recording_rule_names():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name


def test_runbook_base_points_at_docs_runbooks_in_the_repository() -> None:
    assert RUNBOOK_BASE.startswith("https://") and RUNBOOK_BASE.endswith("/docs/runbooks.md")


def test_render_puts_every_runbook_url_on_another_base(tmp_path: Path,
                                                       promtool: str) -> None:
    base = "https://wiki.example.internal/modelmon/runbooks"
    pages = "https://modelmon.example.internal/ui"
    assert RENDER.main(["--runbook-base", base + "/", "--pages-base", pages + "/",
                        "--out", str(tmp_path)]) == 0
    rendered = sorted(tmp_path.glob("*.yml"))
    assert [p.name for p in rendered] == [p.name for p in RULE_FILES]
    for path in rendered:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["annotations"]["runbook_url"] == (
                        f"{base}#{rule['alert'].lower()}")
                    page = _page_url(_alert_labels(rule))
                    assert rule["annotations"].get("page_url") == (
                        page and page.replace(PAGES_BASE, pages, 1))
        # nothing but the runbook and page links differs from the shipped file
        shipped = (RULES_DIR / path.name).read_text()
        assert path.read_text() == shipped.replace(RUNBOOK_BASE, base).replace(
            f"page_url: {PAGES_BASE}", f"page_url: {pages}")
        proc = run([promtool, "check", "rules", str(path)])
        assert proc.returncode == 0, proc.stdout + proc.stderr
