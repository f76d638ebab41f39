"""docker-compose.yml and the Dockerfile: Docker does not run in the test environment, so these
tests prove the wiring instead: pinned images, existing host paths, and the very configuration
files the other deploy tests check, mounted where each program reads them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_support import (
    AM_CONFIG,
    COMPOSE,
    DASHBOARDS_DIR,
    GRAFANA_PROVISIONING,
    PROM_CONFIG,
    PROM_DIR,
    ROOT,
    RULES_DIR,
    SINK_BASE_URL,
    WEBHOOK_SINK,
    load_yaml,
    run,
)

COMPOSE_DOC = load_yaml(COMPOSE)
SERVICES = COMPOSE_DOC["services"]


def _mounts(service: str) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith((".", "/")):
            out[container] = (ROOT / host).resolve()
    return out


def test_services() -> None:
    assert set(SERVICES) == {"postgres", "migrate", "modelmon", "worker", "prometheus",
                             "alertmanager", "grafana", "webhook-sink"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name: str) -> None:
    service = SERVICES[name]
    image = service.get("image")
    if "build" in service or image == SERVICES["migrate"]["image"]:
        return  # built from this repository's Dockerfile
    assert image, f"{name} has no image"
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned"
    assert re.match(r"v?\d+\.\d+(\.\d+)?", tag), f"{name}: {image} is not pinned to a version"


def test_host_paths_exist() -> None:
    for name in SERVICES:
        for container, host in _mounts(name).items():
            assert host.exists(), f"{name}: {host} (mounted at {container}) does not exist"
            assert ROOT in host.parents, f"{name}: {host} is outside the repository"


def test_prometheus_mounts_the_tested_config() -> None:
    mounts = _mounts("prometheus")
    command = SERVICES["prometheus"]["command"]
    config = next(c.split("=", 1)[1] for c in command if c.startswith("--config.file="))
    assert mounts[config] == PROM_CONFIG
    base = Path(config).parent
    assert mounts[str(base / "rules")] == RULES_DIR
    assert mounts[str(base / "targets")] == PROM_DIR / "targets"


def test_prometheus_targets_name_compose_services() -> None:
    modelmon = load_yaml(PROM_DIR / "targets" / "modelmon.yml")
    assert modelmon == [{"targets": ["modelmon:8000"]}]
    alertmanager = load_yaml(PROM_DIR / "targets" / "alertmanager.yml")
    assert alertmanager == [{"targets": ["alertmanager:9093"]}]
    worker = load_yaml(PROM_DIR / "targets" / "modelmon-worker.yml")
    assert worker == [{"targets": ["worker:8001"]}]
    command = SERVICES["worker"]["command"]
    assert command[0] == "worker" and command[command.index("--metrics-port") + 1] == "8001"
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
    assert "8000:8000" in SERVICES["modelmon"]["ports"]
    assert "9093:9093" in SERVICES["alertmanager"]["ports"]


def test_alertmanager_mounts_the_tested_config() -> None:
    command = SERVICES["alertmanager"]["command"]
    config = next(c.split("=", 1)[1] for c in command if c.startswith("--config.file="))
    assert _mounts("alertmanager")[config] == AM_CONFIG
    # the webhooks go to the sink service, on the port it listens on
    host_port = SINK_BASE_URL.removeprefix("http://")
    host, port = host_port.split(":")
    assert host in SERVICES
    sink = SERVICES[host]
    assert sink["command"][-2:] == ["--port", port]
    assert _mounts(host)["/sink"] == WEBHOOK_SINK.parent
    assert sink["command"][1] == "/sink/" + WEBHOOK_SINK.name


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_PROVISIONING
    provider = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "modelmon.yml")["providers"][0]
    assert mounts[provider["options"]["path"]] == DASHBOARDS_DIR
    source = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]
    assert source["url"].removeprefix("http://").split(":")[0] in SERVICES


def test_modelmon_starts_after_migrate_on_postgres() -> None:
    migrate, modelmon, postgres = SERVICES["migrate"], SERVICES["modelmon"], SERVICES["postgres"]
    assert migrate["command"] == ["migrate"]
    assert modelmon["command"] == ["serve", "--host", "0.0.0.0", "--no-migrate"]
    assert modelmon["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    worker = SERVICES["worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for service in (migrate, modelmon, worker):
        url = service["environment"]["MODELMON_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url
    assert modelmon["image"] == migrate["image"] == worker["image"]
    # the jobs run in the worker, not in the API replicas
    assert modelmon["environment"]["MODELMON_SCHEDULER_ENABLED"] == "false"
    assert "MODELMON_SCHEDULER_ENABLED" not in worker["environment"]


def test_compose_runs_the_versions_the_tests_check(promtool: str, amtool: str) -> None:
    prom = re.search(r"version (\d+\.\d+\.\d+)", run([promtool, "--version"]).stdout
                     + run([promtool, "--version"]).stderr)
    am = re.search(r"version (\d+\.\d+\.\d+)", run([amtool, "--version"]).stdout
                   + run([amtool, "--version"]).stderr)
    assert prom and am
    assert SERVICES["prometheus"]["image"] == f"prom/prometheus:v{prom.group(1)}"
    assert SERVICES["alertmanager"]["image"] == f"prom/alertmanager:v{am.group(1)}"


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"(?m)^FROM python:3\.11-slim$", text)
    assert "COPY app ./app" in text
    assert "COPY migrations ./migrations" in text  # shipped inside the package (setup.py)
    # the locked versions, then the package itself (not editable: no source tree kept)
    assert "pip install -r requirements.lock" in text and "pip install --no-deps ." in text
    assert 'ENTRYPOINT ["modelmon"]' in text
    for line in re.findall(r"(?m)^COPY (.+) \S+$", text):
        for src in line.split():
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_docker_compose_config_accepts_the_file(docker_compose: str, tmp_path: Path) -> None:
    """A real Compose implementation validates the file (no engine needed). Debian's
    docker-compose is Compose v1, which predates the top-level `name` (the Compose
    specification's project name, which v2 reads): it checks a copy without that one line,
    run from the repository so relative paths resolve as for `docker compose up`."""
    text = COMPOSE.read_text()
    assert "\nname: modelmon\n" in text
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace("\nname: modelmon\n", "\n"))
    proc = run([docker_compose, "--project-directory", str(ROOT), "-p", "modelmon", "-f",
                str(copy), "config"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resolved = load_yaml(copy, proc.stdout)
    assert set(resolved["services"]) == set(SERVICES)
    # relative host paths resolved against the repository: the tested files are mounted
    mounts = [v.split(":")[0] for v in resolved["services"]["prometheus"]["volumes"]]
    assert str(PROM_CONFIG) in mounts and str(RULES_DIR) in mounts
    assert resolved["services"]["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully")
    # and it refuses what is wrong
    broken = tmp_path / "broken.yml"
    broken.write_text(copy.read_text().replace("    depends_on:\n      postgres:\n        "
                                               "condition: service_healthy",
                                               "    depends_on:\n      postgres:\n        "
                                               "condition: when_ready", 1))
    proc = run([docker_compose, "--project-directory", str(ROOT), "-f", str(broken),
                "config", "-q"])
    assert proc.returncode != 0
