"""deploy/kubernetes/base/: the kustomize base of the overlays, manifests for serve and worker,
their PodDisruptionBudgets, a ServiceMonitor and the PrometheusRule generated from the rule
files: selectors that select, probes and ports that exist, and the PrometheusRule equal to the
rule files (promtool checks its groups). test_deploy_kubernetes_overlays.py renders every
overlay with `kubectl kustomize` and validates the result against the API schemas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from deploy_support import (
    KUBERNETES_DIR,
    RENDER_SCRIPT,
    load_yaml,
    render_rules_module,
    rule_files,
    run,
)

KUSTOMIZATION = load_yaml(KUBERNETES_DIR / "kustomization.yaml")
DOCS = [doc for name in KUSTOMIZATION["resources"]
        for doc in yaml.safe_load_all((KUBERNETES_DIR / name).read_text()) if doc]
BY_KIND: dict[str, list[dict[str, Any]]] = {}
for _doc in DOCS:
    BY_KIND.setdefault(_doc["kind"], []).append(_doc)
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
API = {"Deployment": "apps/v1", "Service": "v1", "ServiceMonitor": "monitoring.coreos.com/v1",
       "PrometheusRule": "monitoring.coreos.com/v1", "PodDisruptionBudget": "policy/v1"}


def _deployment(name: str) -> dict[str, Any]:
    (d,) = [d for d in BY_KIND["Deployment"] if d["metadata"]["name"] == name]
    return d


def test_every_file_is_listed_and_every_object_well_formed() -> None:
    assert sorted(KUSTOMIZATION["resources"]) == sorted(
        p.name for p in KUBERNETES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(BY_KIND) == sorted(API)
    for doc in DOCS:
        assert doc["apiVersion"] == API[doc["kind"]], doc["kind"]
        assert NAME.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, set(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelmon"


def test_deployments_run_serve_and_worker() -> None:
    for name, command, port in (("modelmon", "serve", "http"),
                                ("modelmon-worker", "worker", "metrics")):
        d = _deployment(name)
        spec = d["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"][
            "labels"].items()
        (c,) = spec["template"]["spec"]["containers"]
        assert c["args"][0] == command and c["image"] == "modelmon"
        assert {"name", "image"} <= set(c)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert port in ports and all(isinstance(v, int) for v in ports.values())
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["port"] in ports
        env = {e["name"]: e for e in c["env"]}
        assert env["MODELMON_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "modelmon-database", "key": "url"}
        assert env["MODELMON_LOG_FORMAT"]["value"] == "json"
        # longer than the worst case of a SIGTERM (twice the shutdown timeout for serve)
        timeout = float(env["MODELMON_SHUTDOWN_TIMEOUT_SECONDS"]["value"])
        assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 2 * timeout
    serve = _deployment("modelmon")["spec"]["template"]["spec"]["containers"][0]
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {e["name"]: e.get("value") for e in serve["env"]}[
        "MODELMON_SCHEDULER_ENABLED"] == "false"
    worker = _deployment("modelmon-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"][worker["args"].index("--metrics-host") + 1] == "0.0.0.0"
    assert worker["args"][worker["args"].index("--metrics-port") + 1] == str(
        worker["ports"][0]["containerPort"])


def test_services_select_their_pods_and_the_service_monitor_scrapes_both() -> None:
    services = {s["metadata"]["name"]: s for s in BY_KIND["Service"]}
    assert set(services) == {"modelmon", "modelmon-worker"}
    port_names = set()
    for name, service in services.items():
        pod_labels = _deployment(name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        container = _deployment(name)["spec"]["template"]["spec"]["containers"][0]
        named = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named
            port_names.add(port["name"])
    (monitor,) = BY_KIND["ServiceMonitor"]
    spec = monitor["spec"]
    selected = [s for s in services.values()
                if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 2
    # the job label is each Service's name label: the job names the rules expect
    assert sorted(s["metadata"]["labels"][spec["jobLabel"]] for s in selected) == [
        "modelmon", "modelmon-worker"]
    assert {e["port"] for e in spec["endpoints"]} == port_names
    assert all(e["path"] == "/metrics" for e in spec["endpoints"])


def test_prometheus_rule_is_the_rule_files(promtool: str, tmp_path: Path) -> None:
    render = render_rules_module()
    path = KUBERNETES_DIR / "prometheusrule.yaml"
    assert render.main(["--prometheus-rule", str(path), "--check"]) == 0, (
        f"run {RENDER_SCRIPT.relative_to(KUBERNETES_DIR.parents[2])} --prometheus-rule {path}")
    (rule,) = BY_KIND["PrometheusRule"]
    shipped = [g for p in rule_files() for g in load_yaml(p)["groups"]]
    assert rule["spec"]["groups"] == shipped
    groups = tmp_path / "groups.yml"
    groups.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = run([promtool, "check", "rules", str(groups)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
