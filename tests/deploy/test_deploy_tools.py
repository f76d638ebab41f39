"""The install script, the YAML files, and the webhook sink."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from deploy_support import (
    COMPOSE,
    DEPLOY,
    INSTALL_SCRIPT,
    KUBECTL_SCRIPT,
    ROOT,
    WEBHOOK_SINK,
    load_yaml,
    run,
)

YAML_FILES = sorted(DEPLOY.rglob("*.yml")) + [COMPOSE]


@pytest.mark.parametrize("script", [INSTALL_SCRIPT, KUBECTL_SCRIPT,
                                    ROOT / "scripts" / "install-openapi-linters.sh"],
                         ids=lambda p: p.name)
def test_install_script_is_valid_sh(script: Path) -> None:
    proc = run(["sh", "-n", str(script)])
    assert proc.returncode == 0, proc.stderr


def test_install_script_is_a_no_op_when_the_tools_are_there(promtool: str, amtool: str) -> None:
    proc = run([str(INSTALL_SCRIPT)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "promtool and amtool are installed" in proc.stdout and "docker-compose: /" in proc.stdout


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert isinstance(load_yaml(path), (dict, list)), path


def _request(url: str, method: str = "GET", body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_webhook_sink_records_notifications_by_receiver(sink: str) -> None:
    assert _request(f"{sink}/healthz") == (200, {"status": "ok"})
    note = {"status": "firing", "receiver": "pager",
            "alerts": [{"labels": {"alertname": "ModelmonNoPredictions", "model": "churn"}}]}
    assert _request(f"{sink}/pager", "POST", note)[0] == 200
    assert _request(f"{sink}/ticket", "POST", {"status": "resolved", "alerts": []})[0] == 200
    assert _request(f"{sink}/received/pager") == (200, [note])
    status, everything = _request(f"{sink}/received")
    assert status == 200 and set(everything) == {"pager", "ticket"}
    assert _request(f"{sink}/received", "DELETE")[0] == 200
    assert _request(f"{sink}/received") == (200, {})


def test_webhook_sink_refuses_bad_requests(sink: str) -> None:
    req = urllib.request.Request(f"{sink}/pager", data=b"not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    assert _request(f"{sink}/nowhere")[0] == 404


def test_webhook_sink_runs_as_a_script() -> None:
    proc = subprocess.run(["python3", str(WEBHOOK_SINK), "--help"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "--port" in proc.stdout
