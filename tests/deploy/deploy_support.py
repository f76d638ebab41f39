"""Shared by the deploy tests: paths, the promtool/amtool lookup, YAML loading, and the
native Prometheus/Alertmanager configuration and processes the end-to-end tests start."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULES_DIR = PROM_DIR / "rules"
PROM_TESTS_DIR = PROM_DIR / "tests"
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
AM_ROUTE_CASES = DEPLOY / "alertmanager" / "routes-tests.txt"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
DASHBOARDS_DIR = ROOT / "dashboards"
DASHBOARDS = ("executive.json", "oncall.json", "debug.json")
RUNBOOKS = ROOT / "docs" / "runbooks.md"
CATALOGUE = ROOT / "docs" / "prometheus.md"
COMPOSE = ROOT / "docker-compose.yml"
INSTALL_SCRIPT = ROOT / "scripts" / "install-monitoring-tools.sh"
RENDER_SCRIPT = ROOT / "scripts" / "render-rules.py"
KUBERNETES_DIR = DEPLOY / "kubernetes" / "base"
OVERLAYS_DIR = DEPLOY / "kubernetes" / "overlays"
KUBECTL_SCRIPT = ROOT / "scripts" / "install-kubectl.sh"
CRDS_DIR = Path(__file__).resolve().parent / "crds"
WEBHOOK_SINK = DEPLOY / "webhook-sink" / "sink.py"

# The webhook base URL alertmanager.yml ships with (the docker-compose service).
SINK_BASE_URL = "http://webhook-sink:9095"


# --------------------------------------------------------------------------- tools

class ToolsMissing(RuntimeError):
    pass


TOOLS = ("promtool", "amtool", "docker-compose")


def ensure_monitoring_tools() -> dict[str, str]:
    """Paths of promtool and amtool, installing them with the project's script when missing.

    Raises ToolsMissing (the tests fail, never skip) when they still cannot be found.
    """
    found = {tool: shutil.which(tool) for tool in TOOLS}
    if all(found.values()):
        return found  # type: ignore[return-value]
    command = [str(INSTALL_SCRIPT)]
    if os.geteuid() != 0 and shutil.which("sudo"):
        command = ["sudo", "-n", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = {tool: shutil.which(tool) for tool in TOOLS}
    if not all(found.values()):
        missing = ", ".join(t for t, p in found.items() if not p)
        raise ToolsMissing(
            f"{missing} not found after running {INSTALL_SCRIPT.relative_to(ROOT)} "
            f"(exit {proc.returncode}); install the Debian packages prometheus and "
            f"prometheus-alertmanager and docker-compose, or put promtool, amtool and "
            f"docker-compose on PATH.\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}")
    return found  # type: ignore[return-value]


def ensure_kubectl() -> str:
    """A kubectl with kustomize v4+: scripts/install-kubectl.sh finds or installs one and
    prints its path last. Raises ToolsMissing (the tests fail, never skip) when it cannot."""
    proc = subprocess.run(["sh", str(KUBECTL_SCRIPT)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        raise ToolsMissing(
            f"no kubectl after running {KUBECTL_SCRIPT.relative_to(ROOT)} (exit "
            f"{proc.returncode}); put a kubectl with kustomize v4+ on PATH.\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}")
    return lines[-1]


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


# --------------------------------------------------------------------------- yaml

def load_yaml(path: Path | str, text: str | None = None) -> Any:
    """One YAML document, parsed safely."""
    return yaml.safe_load(Path(path).read_text() if text is None else text)


# --------------------------------------------------------------------------- rules

def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(PROM_TESTS_DIR.glob("*_test.yml"))


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in rule_files():
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"] or []:
                if "alert" in rule:
                    rules.append({**rule, "_file": path.name, "_group": group["name"]})
    return rules


def recording_rule_names() -> set[str]:
    names = set()
    for path in rule_files():
        for group in load_yaml(path)["groups"]:
            names.update(r["record"] for r in group["rules"] or [] if "record" in r)
    return names


def markdown_anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in path.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def catalogue_metrics() -> set[str]:
    """Metric names in docs/prometheus.md's tables, with a histogram's derived series."""
    names: set[str] = set()
    for line in CATALOGUE.read_text().splitlines():
        if not line.startswith("| `modelmon_"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        kind = cells[1]
        for name in re.findall(r"`(modelmon_[a-z0-9_]+)`", cells[0]):
            names.add(name)
            if kind.startswith("histogram"):
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


# --------------------------------------------------------------------------- dashboards

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "${__rate_interval}": "1m",
    "$__interval": "1m", "${__interval}": "1m",
    "$__range": "1h", "${__range}": "1h",
}


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and annotation query of a dashboard."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((f"panel {panel['title']!r} target {target.get('refId')}",
                            target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for ann in dashboard.get("annotations", {}).get("list", []):
        if "expr" in ann:
            out.append((f"annotation {ann['name']!r}", ann["expr"]))
    return out


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """The expr as Grafana would send it, with template variables replaced (default: all)."""
    values = values or {}
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    # ($1, $2 ... are label_replace's groups, which Grafana leaves alone: no variable's name)
    expr = re.sub(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)",
                  lambda m: values.get(m.group(1) or m.group(2), ".*"), expr)
    return expr


PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "bool", "offset", "abs", "rate", "irate",
    "increase", "delta", "idelta", "deriv", "histogram_quantile", "label_replace",
    "label_join", "vector", "scalar", "time", "sort", "sort_desc", "round", "clamp_min",
    "clamp_max", "absent", "changes", "resets", "avg_over_time", "max_over_time",
    "min_over_time", "sum_over_time", "count_over_time", "last_over_time", "timestamp", "inf",
    "nan", "le",
}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers outside strings, labels and keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    names = set(re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])\s*(?!\()", text))
    calls = set(re.findall(r"([a-zA-Z_][\w]*)\s*\(", text))
    return {n for n in names - calls if n.lower() not in PROMQL_WORDS
            and not re.fullmatch(r"\d+[smhdwy]", n)}


# --------------------------------------------------------------------------- native configs

def render_rules_module() -> ModuleType:
    """scripts/render-rules.py as a module (its DEFAULT_RUNBOOK_BASE, render, main)."""
    spec = importlib.util.spec_from_file_location("render_rules", RENDER_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_prometheus_config(directory: Path, modelmon_targets: list[str],
                            alertmanager_targets: list[str],
                            evaluation_interval: str | None = None,
                            scrape_interval: str | None = None,
                            rule_for: str | None = None,
                            worker_targets: list[str] | None = None) -> Path:
    """A copy of deploy/prometheus/prometheus.yml in `directory`, next to the shipped rules
    (symlinked) and targets files of its own; returns the config path.

    The config file is copied as is except for the optional interval overrides, so a native
    Prometheus runs the very configuration docker-compose.yml mounts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = PROM_CONFIG.read_text()
    for key, value in (("evaluation_interval", evaluation_interval),
                       ("scrape_interval", scrape_interval)):
        if value is not None:
            text, n = re.subn(rf"(?m)^(  {key}:) \S+", rf"\1 {value}", text)
            if n != 1:
                raise RuntimeError(f"global.{key} not found in {PROM_CONFIG}")
    (directory / "prometheus.yml").write_text(text)
    rules = directory / "rules"
    if rule_for is None:
        if not rules.exists():
            rules.symlink_to(RULES_DIR, target_is_directory=True)
    else:  # the shipped rules with every `for:` shortened, for a test that cannot wait
        rules.mkdir(exist_ok=True)
        for f in RULES_DIR.glob("*.yml"):
            (rules / f.name).write_text(
                re.sub(r"(?m)^(\s+for:) \S+", rf"\1 {rule_for}", f.read_text()))
    targets = directory / "targets"
    targets.mkdir(exist_ok=True)
    for name, addrs in (("modelmon.yml", modelmon_targets),
                        ("modelmon-worker.yml", worker_targets or []),
                        ("alertmanager.yml", alertmanager_targets)):
        (targets / name).write_text(json.dumps([{"targets": addrs}]) + "\n")
    return directory / "prometheus.yml"


def write_alertmanager_config(directory: Path, sink_base_url: str,
                              group_wait: str | None = None,
                              group_interval: str | None = None,
                              repeat_interval: str | None = None) -> Path:
    """A copy of deploy/alertmanager/alertmanager.yml whose webhooks post to `sink_base_url`
    (instead of the compose service) and, optionally, with shorter route timings."""
    directory.mkdir(parents=True, exist_ok=True)
    text = AM_CONFIG.read_text()
    if SINK_BASE_URL not in text:
        raise RuntimeError(f"{SINK_BASE_URL} not found in {AM_CONFIG}")
    text = text.replace(SINK_BASE_URL, sink_base_url.rstrip("/"))
    for key, value in (("group_wait", group_wait), ("group_interval", group_interval),
                       ("repeat_interval", repeat_interval)):
        if value is not None:
            text, n = re.subn(rf"(?m)^(  {key}:) \S+", rf"\1 {value}", text)
            if n != 1:
                raise RuntimeError(f"route.{key} not found in {AM_CONFIG}")
    path = directory / "alertmanager.yml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
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


def find_binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ToolsMissing(f"none of {names} on PATH; scripts/install-monitoring-tools.sh "
                       "installs them")


def start_process(args: list[str], ready_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited: {log.read_text()[-3000:]}")
        with urllib.request.urlopen(ready_url, timeout=2) as resp:
            return resp.status == 200

    try:
        wait_for(ready, ready_url)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def start_alertmanager(directory: Path, sink_url: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The shipped Alertmanager config, its webhooks pointed at ``sink_url``, test timings."""
    config = write_alertmanager_config(directory / "am", sink_url, group_wait="1s",
                                       group_interval="1s", repeat_interval="1h")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_process([find_binary("prometheus-alertmanager", "alertmanager"),
                          f"--config.file={config}", f"--storage.path={directory / 'am-data'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                         f"{url}/-/ready", directory / "alertmanager.log")
    return url, proc


def start_prometheus(directory: Path, modelmon_targets: list[str], alertmanager_url: str,
                     rule_for: str | None = None, worker_targets: list[str] | None = None
                     ) -> tuple[str, subprocess.Popen[bytes]]:
    """The shipped Prometheus config and rules, scraping and evaluating every second."""
    config = write_prometheus_config(directory / "prom", modelmon_targets,
                                     [alertmanager_url.removeprefix("http://")],
                                     evaluation_interval="1s", scrape_interval="1s",
                                     rule_for=rule_for, worker_targets=worker_targets)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_process([find_binary("prometheus"), f"--config.file={config}",
                          f"--storage.tsdb.path={directory / 'prom-data'}",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         f"{url}/-/ready", directory / "prometheus.log")
    return url, proc
