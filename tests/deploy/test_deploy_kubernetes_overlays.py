"""deploy/kubernetes/overlays/*: each overlay rendered by `kubectl kustomize` (the kubectl of
scripts/install-kubectl.sh) and validated: the built-in kinds by `kubernetes-validate --strict`
(unknown fields rejected), the Prometheus Operator's kinds against the openAPIV3Schema of its
CRDs (tests/deploy/crds/, made strict the same way). Then what the overlays must keep: a
restricted securityContext on every container, a PodDisruptionBudget per Deployment, the
probes, and a ServiceMonitor that sends the scrape token the pods require."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import CRDS_DIR, OVERLAYS_DIR, load_yaml, run

OVERLAYS = sorted(p.name for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").exists())
TOKEN_REF = {"name": "modelmon-metrics", "key": "token"}
DATABASE_REF = {"name": "modelmon-database", "key": "url"}


def _validator_command() -> str:
    beside = Path(sys.executable).parent / "kubernetes-validate"
    found = str(beside) if beside.exists() else shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate not installed: make install (requirements-dev.lock)"
    return found


@cache
def _render(kubectl: str, overlay: str) -> str:
    proc = subprocess.run([kubectl, "kustomize", str(OVERLAYS_DIR / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {overlay}: {proc.stderr}"
    return proc.stdout


def _docs(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_render(kubectl, overlay)) if d]


def _strict(schema: Any) -> Any:
    """The CRD schema as JSON Schema that refuses unknown fields, as the API server's strict
    field validation does: objects with declared properties admit no others, unless the CRD
    says it keeps unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def _crd_schemas() -> dict[tuple[str, str], Any]:
    schemas = {}
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        crd = load_yaml(path)
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schema = _strict(version["schema"]["openAPIV3Schema"])
            # metadata is the API server's ObjectMeta, which the CRD leaves open
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(api, crd["spec"]["names"]["kind"])] = schema
    return schemas


def _validate(docs: list[dict[str, Any]], tmp_path: Path) -> list[str]:
    """Every problem found in the rendered documents (empty when they are valid)."""
    problems = []
    crds = _crd_schemas()
    builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in crds]
    for doc in docs:
        schema = crds.get((doc["apiVersion"], doc["kind"]))
        if schema is not None:
            problems += [f"{doc['kind']}/{doc['metadata']['name']}: {e.json_path}: {e.message}"
                         for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(builtin))
    proc = run([_validator_command(), "--strict", str(rendered)])
    passed = [line for line in proc.stdout.splitlines() if " passed for resource " in line]
    if proc.returncode != 0 or len(passed) != len(builtin):
        problems.append(f"kubernetes-validate --strict (exit {proc.returncode}, "
                        f"{len(passed)}/{len(builtin)} passed):\n{proc.stdout}{proc.stderr}")
    return problems


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(kubectl: str, overlay: str,
                                               tmp_path: Path) -> None:
    docs = _docs(kubectl, overlay)
    kinds = sorted({d["kind"] for d in docs})
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor",
            "PrometheusRule"} <= set(kinds), kinds
    assert _validate(docs, tmp_path) == []
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert len(namespaces) == 1 and None not in namespaces, namespaces


def test_the_validation_rejects_unknown_and_mistyped_fields(kubectl: str,
                                                             tmp_path: Path) -> None:
    docs = _docs(kubectl, "prod")
    deployment = copy.deepcopy(_by_kind(docs, "Deployment")["modelmon"])
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"] = True  # a typo of readOnlyRootFilesystem
    monitor = copy.deepcopy(_by_kind(docs, "ServiceMonitor")["modelmon"])
    monitor["spec"]["endpoints"][0]["bearerTokenSecrets"] = TOKEN_REF  # no such field
    budget = copy.deepcopy(_by_kind(docs, "PodDisruptionBudget")["modelmon"])
    budget["spec"]["maxUnavailable"] = [1]
    problems = _validate([deployment, monitor, budget], tmp_path)
    text = "\n".join(problems)
    assert "bearerTokenSecrets" in text and "readOnlyRootFileSystem" in text, text
    assert "maxUnavailable" in text, text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_restricted(kubectl: str, overlay: str) -> None:
    deployments = _by_kind(_docs(kubectl, overlay), "Deployment")
    assert set(deployments) == {"modelmon", "modelmon-worker"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert "privileged" not in sc and "add" not in sc["capabilities"], name
            # the read-only root leaves /tmp (spooled uploads, multiprocess metrics) writable
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_disruption_budgets(kubectl: str, overlay: str) -> None:
    docs = _docs(kubectl, overlay)
    deployments = _by_kind(docs, "Deployment")
    serve = deployments["modelmon"]["spec"]["template"]["spec"]["containers"][0]
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = deployments["modelmon-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    budgets = list(_by_kind(docs, "PodDisruptionBudget").values())
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets
                    if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, name
        # a budget that admits a drain whatever the replica count
        assert covering[0]["spec"].get("maxUnavailable") == 1, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_monitor_sends_the_token_the_pods_require(kubectl: str,
                                                              overlay: str) -> None:
    docs = _docs(kubectl, overlay)
    (monitor,) = _by_kind(docs, "ServiceMonitor").values()
    assert len(monitor["spec"]["endpoints"]) == 2
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["authorization"] == {"type": "Bearer", "credentials": TOKEN_REF}
    for name, deployment in _by_kind(docs, "Deployment").items():
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0][
            "env"]}
        assert env["MODELMON_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == TOKEN_REF, name
        assert env["MODELMON_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DATABASE_REF, name
    secrets = _by_kind(docs, "Secret")
    if overlay == "dev":  # generated with throwaway values, under the names referenced
        assert {"modelmon-metrics", "modelmon-database"} <= set(secrets)
        assert "token" in secrets["modelmon-metrics"]["data"]
    if overlay == "prod":  # created in the namespace beforehand, never in the repository
        assert secrets == {}


def test_overlays_differ_where_environments_do(kubectl: str) -> None:
    replicas = {o: {n: d["spec"]["replicas"]
                    for n, d in _by_kind(_docs(kubectl, o), "Deployment").items()}
                for o in ("dev", "prod")}
    assert replicas == {"dev": {"modelmon": 1, "modelmon-worker": 1},
                        "prod": {"modelmon": 3, "modelmon-worker": 2}}
    images = {o: {c["image"] for d in _by_kind(_docs(kubectl, o), "Deployment").values()
                  for c in d["spec"]["template"]["spec"]["containers"]}
              for o in ("dev", "prod")}
    assert images == {"dev": {"modelmon:dev"},
                      "prod": {"registry.example.com/modelmon:0.1.0"}}
