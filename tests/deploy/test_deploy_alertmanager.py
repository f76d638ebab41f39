"""alertmanager.yml: amtool's check, the route cases of routes-tests.txt, and the routing and
inhibition the runbooks promise."""

from __future__ import annotations

import pytest
from deploy_support import AM_CONFIG, AM_ROUTE_CASES, SINK_BASE_URL, alert_rules, load_yaml, run

CONFIG = load_yaml(AM_CONFIG)


def _route_cases() -> list[tuple[str, list[str]]]:
    cases = []
    for line in AM_ROUTE_CASES.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            receiver, *labels = line.split()
            cases.append((receiver, labels))
    return cases


CASES = _route_cases()


def test_amtool_check_config(amtool: str) -> None:
    proc = run([amtool, "check-config", str(AM_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_route_cases_cover_every_severity() -> None:
    by_severity = {}
    for receiver, labels in CASES:
        severity = next((lab.split("=", 1)[1] for lab in labels if lab.startswith("severity=")),
                        None)
        by_severity.setdefault(severity, set()).add(receiver)
    assert by_severity["critical"] == {"pager"}
    assert by_severity["warning"] == {"ticket"}
    assert by_severity["info"] == {"null"}
    assert by_severity[None] == {"null"}


@pytest.mark.parametrize("receiver,labels", CASES, ids=lambda c: str(c))
def test_amtool_route(amtool: str, receiver: str, labels: list[str]) -> None:
    proc = run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                f"--verify.receivers={receiver}", *labels])
    assert proc.returncode == 0, f"{labels} routed to {proc.stdout.strip()!r}, not {receiver}"
    assert proc.stdout.splitlines()[0].strip() == receiver


def test_amtool_route_refuses_a_wrong_receiver(amtool: str) -> None:
    proc = run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                "--verify.receivers=ticket", "severity=critical", "alertname=X", "model=m"])
    assert proc.returncode != 0, "amtool's verification would not catch a misroute"


def test_route_tree() -> None:
    route = CONFIG["route"]
    assert route["receiver"] == "null"
    assert route["group_by"] == ["alertname", "env", "model"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "30s", "5m", "4h")
    for sub in route["routes"]:
        assert "match" not in sub and "match_re" not in sub, "use matchers:"
        assert sub["matchers"]
    receivers = {r["name"]: r for r in CONFIG["receivers"]}
    assert set(receivers) == {"pager", "ticket", "null"}
    assert "webhook_configs" not in receivers["null"]
    for name in ("pager", "ticket"):
        (hook,) = receivers[name]["webhook_configs"]
        assert hook["url"] == f"{SINK_BASE_URL}/{name}"
        assert hook["send_resolved"] is True


def test_inhibit_rules() -> None:
    rules = CONFIG["inhibit_rules"]
    for rule in rules:
        assert "source_match" not in rule and "target_match" not in rule, "use *_matchers:"
    severity = [r for r in rules if r["source_matchers"] == ['severity="critical"']]
    assert len(severity) == 1
    assert severity[0]["target_matchers"] == ['severity="warning"']
    # per alert instance: another feature's page does not swallow this feature's ticket
    assert severity[0]["equal"] == ["alertname", "env", "model", "version", "feature",
                                    "cohort_key", "cohort"]

    alert_names = {r["alert"] for r in alert_rules()}
    (stale,) = [r for r in rules if r is not severity[0]]
    assert stale["equal"] == ["env", "model"]

    def names(matchers: list[str]) -> set[str]:
        (matcher,) = matchers
        assert matcher.startswith('alertname=~"') and matcher.endswith('"'), matcher
        return set(matcher[len('alertname=~"'):-1].split("|"))

    sources, targets = names(stale["source_matchers"]), names(stale["target_matchers"])
    assert sources == {"ModelmonNoPredictions", "ModelmonJobStale"}
    # the KS alerts were folded into the drift decisions (the drift alerts fire on them)
    assert {"ModelmonFeatureDriftHigh", "ModelmonFeatureMissingValues",
            "ModelmonFeatureUnseenValues", "ModelmonPredictionDriftHigh",
            "ModelmonCalibrationErrorHigh", "ModelmonCohortErrorRegression",
            "ModelmonCohortMaeRegression", "ModelmonGeneralizationGapHigh"} <= targets
    assert (sources | targets) <= alert_names, (sources | targets) - alert_names
