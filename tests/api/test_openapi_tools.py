"""The served spec (/openapi.json) as OpenAPI tools read it: Spectral (spectral:oas) and Redocly
(recommended) from npm report no error and no warning on it, and a Python client generated
from it by openapi-python-client (PyPI) registers a model, lists the models and posts a
prediction batch against a live server. scripts/install-openapi-linters.sh installs the pinned
linters (tools/openapi-lint/package.json and its lock) when missing."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import ROOT

LINT_DIR = ROOT / "tools" / "openapi-lint"
INSTALL = ROOT / "scripts" / "install-openapi-linters.sh"
# The client sends these upload bodies as bytes (its generator knows no CSV or Parquet).
# The generator's default post hooks run `ruff` from PATH; this one runs the project's (its
# formatting also mends `!= 1and`, which the generator writes for a constant field).
CLIENT_CONFIG = """post_hooks: ["{ruff} format ."]
package_name_override: modelmon_api
project_name_override: modelmon-api
content_type_overrides:
  text/csv: application/octet-stream
  application/vnd.apache.parquet: application/octet-stream
"""


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spec exactly as the service serves it."""
    tmp = tmp_path_factory.mktemp("spec")
    app = create_app(Settings(database_url=f"sqlite:///{tmp}/spec.db"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        response = c.get("/openapi.json")
    app.state.engine.dispose()
    assert response.status_code == 200, response.text
    path = tmp / "openapi.json"
    path.write_text(json.dumps(response.json(), indent=1))
    return path


@pytest.fixture(scope="module")
def linters() -> Path:
    proc = subprocess.run(["sh", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{INSTALL.relative_to(ROOT)} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", pytrace=False)
    return LINT_DIR / "node_modules" / ".bin"


def _node(args: list[str]) -> subprocess.CompletedProcess[str]:
    # no telemetry or update check from Redocly: CI reaches no host but the registries
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=LINT_DIR,
                          env=env)


def test_spectral_reports_no_error(linters: Path, spec_file: Path) -> None:
    proc = _node([str(linters / "spectral"), "lint", "--ruleset", ".spectral.yaml",
                  "--format", "json", "--quiet", str(spec_file)])
    problems: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    errors = [f"{'.'.join(map(str, p['path']))}: {p['code']}: {p['message']}"
              for p in problems if p["severity"] == 0]
    assert errors == [] and proc.returncode == 0, "\n".join(errors) or proc.stderr
    # nor any warning: every operation has a description beside its summary, and so on
    warnings = [f"{'.'.join(map(str, p['path']))}: {p['code']}" for p in problems]
    assert warnings == [], "\n".join(warnings)


def test_redocly_reports_no_error(linters: Path, spec_file: Path) -> None:
    proc = _node([str(linters / "redocly"), "lint", "--config", "redocly.yaml",
                  "--format", "json", str(spec_file)])
    report = json.loads(proc.stdout)
    problems = [f"{p['severity']}: {p['ruleId']}: {p['message']} "
                f"{[loc.get('pointer') for loc in p.get('location', [])]}"
                for p in report["problems"]]
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, "\n".join(problems)
    assert proc.returncode == 0, proc.stderr


def test_the_spec_shows_no_default_a_type_refuses(spec_file: Path) -> None:
    """`default: null` on a field whose type refuses null (what Spectral flagged first)."""
    spec = json.loads(spec_file.read_text())
    bad = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            types = node.get("type")
            types = types if isinstance(types, list) else [types]
            if "default" in node and node["default"] is None and "null" not in types and (
                    not any(s.get("type") == "null" for s in node.get("anyOf", []))):
                bad.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(spec, "$")
    assert bad == []
    for path in ("/healthz", "/readyz"):
        assert spec["paths"][path]["get"]["security"] == [], path
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and "list_models" in ids


@pytest.fixture(scope="module")
def generated(spec_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("client")
    ruff = Path(sys.executable).parent / "ruff"
    (out / "config.yaml").write_text(CLIENT_CONFIG.replace("{ruff}", str(ruff)))
    generator = Path(sys.executable).parent / "openapi-python-client"
    proc = subprocess.run([str(generator), "generate", "--path", str(spec_file), "--meta",
                           "none", "--config", str(out / "config.yaml"), "--output-path",
                           str(out / "modelmon_api")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every operation generated: a warning names one the generator had to leave out
    assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("modelmon_api")
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n.split(".")[0] == "modelmon_api"]:
            del sys.modules[name]


def test_a_generated_client_calls_the_service(generated: Any, live_server: Any) -> None:
    from modelmon_api.api.health import readyz
    from modelmon_api.api.ingest import post_predictions
    from modelmon_api.api.models import create_model, create_version, list_models
    from modelmon_api.client import Client
    from modelmon_api.models import ModelCreate, PredictionBatch, VersionCreate

    client = Client(base_url=live_server.url, raise_on_unexpected_status=True)
    assert readyz.sync_detailed(client=client).status_code == 200
    created = create_model.sync_detailed(client=client, body=ModelCreate.from_dict({
        "name": "fraud", "task": "binary_classification",
        "features": [{"name": "amount", "type": "numeric"},
                     {"name": "country", "type": "categorical"}],
        "classes": ["legit", "fraud"]}))
    assert created.status_code == 201, created.content
    version = create_version.sync_detailed("fraud", client=client,
                                           body=VersionCreate.from_dict({"version": "v1"}))
    assert version.status_code == 201, version.content
    models = list_models.sync(client=client)
    assert [(m.name, m.task.value) for m in models] == [("fraud", "binary_classification")]
    now = datetime.now(UTC).isoformat()
    batch = PredictionBatch.from_dict({"records": [
        {"model": "fraud", "version": "v1", "prediction_id": f"p{i}", "timestamp": now,
         "features": {"amount": 10.0 + i, "country": "DE"},
         "prediction": {"score": 0.1 * i, "label": "fraud" if i > 5 else "legit"}}
        for i in range(10)]})
    result = post_predictions.sync_detailed(client=client, body=batch)
    assert result.status_code == 200, result.content
    assert result.parsed.accepted == 10 and result.parsed.duplicates == 0
    # the typed error body of a refused batch
    refused = post_predictions.sync_detailed(client=client, body=PredictionBatch.from_dict(
        {"records": [{**batch.to_dict()["records"][0], "model": "nope"}]}))
    assert refused.status_code in (404, 422) and refused.parsed.code, refused.content
