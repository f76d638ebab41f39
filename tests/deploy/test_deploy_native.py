"""Prometheus and Alertmanager started natively with the shipped configuration (the same files
docker-compose.yml mounts), pointed at local stand-ins through the overrides the end-to-end
tests use: deploy_support.write_prometheus_config and write_alertmanager_config."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    DASHBOARDS,
    DASHBOARDS_DIR,
    alert_rules,
    dashboard_exprs,
    recording_rule_names,
    substitute,
    write_alertmanager_config,
    write_prometheus_config,
)

METRICS = b"""\
# TYPE modelmon_feature_psi gauge
modelmon_feature_psi{model="churn",version="v2",feature="age"} 0.3
# TYPE modelmon_job_last_run_failed gauge
modelmon_job_last_run_failed{job="drift",model="churn"} 0
# TYPE modelmon_job_interval_seconds gauge
modelmon_job_interval_seconds{job="drift"} 3600
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"none of {names} on PATH; scripts/install-monitoring-tools.sh installs them",
                pytrace=False)


def _start(args: list[str], ready_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited: {log.read_text()[-3000:]}")
        with urllib.request.urlopen(ready_url, timeout=2) as resp:
            return resp.status == 200

    try:
        _wait_for(ready, ready_url)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def alertmanager(tmp_path: Path, sink: str, monitoring_tools: dict) -> Iterator[str]:
    binary = _binary("prometheus-alertmanager", "alertmanager")
    config = write_alertmanager_config(tmp_path / "am", sink, group_wait="1s",
                                       group_interval="1s", repeat_interval="1h")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                  f"{url}/-/ready", tmp_path / "alertmanager.log")
    yield url
    _stop(proc)


@pytest.fixture
def metrics_target() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_target: str, alertmanager: str) -> Iterator[str]:
    binary = _binary("prometheus")
    config = write_prometheus_config(tmp_path / "prom", [metrics_target],
                                     [alertmanager.removeprefix("http://")],
                                     evaluation_interval="1s", scrape_interval="1s")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start([binary, f"--config.file={config}",
                   f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                   f"--web.listen-address=127.0.0.1:{port}"],
                  f"{url}/-/ready", tmp_path / "prometheus.log")
    yield url
    _stop(proc)


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_runs_the_shipped_config(prometheus: str, alertmanager: str) -> None:
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules if r["type"] == "alerting"} == {
        r["alert"] for r in alert_rules()}
    assert {r["name"] for r in rules if r["type"] == "recording"} == recording_rule_names()

    # scraped with job="modelmon", while the job metrics keep their own `job` label
    _wait_for(lambda: _query(prometheus, 'up{job="modelmon"} == 1'), "the scrape")
    (failed,) = _wait_for(lambda: _query(prometheus, "modelmon_job_last_run_failed"), "series")
    assert failed["metric"]["job"] == "drift"
    (psi,) = _query(prometheus, "modelmon_feature_psi")
    assert psi["metric"]["job"] == "modelmon"

    # the drift alert is pending at both severities (it holds for 15m before firing)
    pending = _wait_for(lambda: _query(
        prometheus, 'ALERTS{alertname="ModelmonFeatureDriftHigh", alertstate="pending"}'),
        "pending alerts")
    assert {a["metric"]["severity"] for a in pending} == {"critical", "warning"}
    def evaluated() -> list[dict[str, Any]]:
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = _wait_for(evaluated, "every rule evaluated")
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]

    active = _wait_for(lambda: _get(f"{prometheus}/api/v1/alertmanagers")["data"][
        "activeAlertmanagers"], "the Alertmanager")
    assert active[0]["url"].startswith(alertmanager)


def test_prometheus_accepts_every_dashboard_expr(prometheus: str) -> None:
    for name in DASHBOARDS:
        dashboard = json.loads((DASHBOARDS_DIR / name).read_text())
        for where, expr in dashboard_exprs(dashboard):
            body = _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode(
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
        got = _get(f"{sink}/received")
        return {receiver: {(a["labels"]["alertname"], a["labels"]["severity"],
                            a["labels"]["model"]) for note in notes for a in note["alerts"]}
                for receiver, notes in got.items()}

    _wait_for(lambda: len(received().get("pager", ())) == 2
              and received().get("ticket"), "notifications")
    time.sleep(3)  # several group intervals: anything inhibited would have arrived by now
    got = received()
    assert got["pager"] == {("ModelmonFeatureDriftHigh", "critical", "churn"),
                            ("ModelmonNoPredictions", "critical", "spam")}
    assert got["ticket"] == {("ModelmonLabelCoverageLow", "warning", "fraud")}
    assert set(got) == {"pager", "ticket"}
