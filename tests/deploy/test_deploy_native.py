"""Prometheus and Alertmanager started natively with the shipped configuration (the same files
docker-compose.yml mounts), pointed at local stand-ins through the overrides the end-to-end
tests use: deploy_support.write_prometheus_config and write_alertmanager_config."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    PROM_CONFIG,
    alert_rules,
    dashboard_exprs,
    get_json,
    load_yaml,
    query,
    recording_rule_names,
    start_alertmanager,
    start_prometheus,
    stop_process,
    substitute,
    wait_for,
)

METRICS = b"""\
# TYPE modelmon_feature_psi gauge
modelmon_feature_psi{model="churn",version="v2",feature="age"} 0.3
# TYPE modelmon_feature_check_state gauge
modelmon_feature_check_state{model="churn",version="v2",feature="age",check="feature_drift"} 2
# TYPE modelmon_job_last_run_failed gauge
modelmon_job_last_run_failed{job_name="drift",model="churn"} 0
# TYPE modelmon_job_interval_seconds gauge
modelmon_job_interval_seconds{job_name="drift"} 3600
# TYPE modelmon_model_paging gauge
modelmon_model_paging{model="churn"} 1
# TYPE modelmon_model_maintenance gauge
modelmon_model_maintenance{model="churn"} 0
"""


@pytest.fixture
def alertmanager(tmp_path: Path, sink: str, monitoring_tools: dict) -> Iterator[str]:
    url, proc = start_alertmanager(tmp_path, sink)
    yield url
    stop_process(proc)


@pytest.fixture
def metrics_target() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_target: str, alertmanager: str) -> Iterator[str]:
    url, proc = start_prometheus(tmp_path, [metrics_target], alertmanager)
    yield url
    stop_process(proc)


def test_prometheus_runs_the_shipped_config(prometheus: str, alertmanager: str) -> None:
    groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules if r["type"] == "alerting"} == {
        r["alert"] for r in alert_rules()}
    assert {r["name"] for r in rules if r["type"] == "recording"} == recording_rule_names()

    # scraped with Prometheus' own job="modelmon" (no honor_labels), and the monitoring job
    # of the job metrics in `job_name`, untouched
    config = load_yaml(PROM_CONFIG)
    assert all("honor_labels" not in c for c in config["scrape_configs"])
    wait_for(lambda: query(prometheus, 'up{job="modelmon"} == 1'), "the scrape")
    (failed,) = wait_for(lambda: query(prometheus, "modelmon_job_last_run_failed"), "series")
    assert (failed["metric"]["job"], failed["metric"]["job_name"]) == ("modelmon", "drift")
    assert "exported_job" not in failed["metric"]
    (psi,) = query(prometheus, "modelmon_feature_psi")
    assert psi["metric"]["job"] == "modelmon"

    # the drift alert on the stored decision is pending at both severities (it holds for 5m
    # before firing)
    # (the two rules are evaluated one after the other: a query between them sees one)
    def both_pending() -> list[dict[str, Any]]:
        pending = query(
            prometheus, 'ALERTS{alertname="ModelmonFeatureDriftHigh", alertstate="pending"}')
        return pending if len({a["metric"]["severity"] for a in pending}) >= 2 else []
    pending = wait_for(both_pending, "pending alerts at both severities")
    assert {a["metric"]["severity"] for a in pending} == {"critical", "warning"}
    def evaluated() -> list[dict[str, Any]]:
        groups = get_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = wait_for(evaluated, "every rule evaluated")
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]

    active = wait_for(lambda: get_json(f"{prometheus}/api/v1/alertmanagers")["data"][
        "activeAlertmanagers"], "the Alertmanager")
    assert active[0]["url"].startswith(alertmanager)


def test_prometheus_accepts_every_dashboard_expr(prometheus: str) -> None:
    for name in DASHBOARDS:
        dashboard = json.loads((DASHBOARDS_DIR / name).read_text())
        for where, expr in dashboard_exprs(dashboard):
            body = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode(
                {"query": substitute(expr)}))
            assert body["status"] == "success", f"{name} {where}: {body}"


def _post_alerts(am: str, alerts: list[dict[str, str]]) -> None:
    data = json.dumps([{"labels": labels, "annotations": {"summary": "test"}}
                       for labels in alerts]).encode()
    req = urllib.request.Request(f"{am}/api/v2/alerts", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def test_alertmanager_routes_and_inhibits(alertmanager: str, sink: str) -> None:
    _post_alerts(alertmanager, [
        # churn: critical pages; its warning is inhibited by the critical
        {"alertname": "ModelmonFeatureDriftHigh", "severity": "critical", "model": "churn",
         "version": "v2", "feature": "age"},
        {"alertname": "ModelmonFeatureDriftHigh", "severity": "warning", "model": "churn",
         "version": "v2", "feature": "age"},
        # spam stopped logging: its drift warning is inhibited
        {"alertname": "ModelmonNoPredictions", "severity": "critical", "model": "spam"},
        {"alertname": "ModelmonCalibrationErrorHigh", "severity": "warning", "model": "spam",
         "version": "1"},
        # fraud: a plain warning makes a ticket
        {"alertname": "ModelmonLabelCoverageLow", "severity": "warning", "model": "fraud",
         "version": "7"},
        # info goes nowhere
        {"alertname": "ModelmonExample", "severity": "info", "model": "fraud"},
    ])

    def received() -> dict[str, set[tuple[str, str, str]]]:
        got = get_json(f"{sink}/received")
        return {receiver: {(a["labels"]["alertname"], a["labels"]["severity"],
                            a["labels"]["model"]) for note in notes for a in note["alerts"]}
                for receiver, notes in got.items()}

    wait_for(lambda: len(received().get("pager", ())) == 2
              and received().get("ticket"), "notifications")
    time.sleep(3)  # several group intervals: anything inhibited would have arrived by now
    got = received()
    assert got["pager"] == {("ModelmonFeatureDriftHigh", "critical", "churn"),
                            ("ModelmonNoPredictions", "critical", "spam")}
    assert got["ticket"] == {("ModelmonLabelCoverageLow", "warning", "fraud")}
    assert set(got) == {"pager", "ticket"}
