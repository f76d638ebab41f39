"""What every command offers (help and a default on each option, --json) and the report
tables' reasons: importance and page-or-ticket in drift, the gap in cohorts, compare as a
table."""

from __future__ import annotations

import argparse
import io

import pytest

from app import cli
from app.cli.console import console
from app.cli.report import alert, render


def parser() -> argparse.ArgumentParser:
    from app.cli import backfill, demo, imports, migrate, report, serve, tokens, worker

    p = argparse.ArgumentParser(prog="modelmon")
    sub = p.add_subparsers(dest="command", required=True)
    for m in (serve, worker, report, demo, imports, backfill, migrate):
        m.add_parser(sub)
    tokens.add_parsers(sub)
    cli.show_defaults(p)
    return p


COMMANDS = cli.leaf_parsers(parser())


def test_every_command_is_checked():
    assert {p.prog for p in COMMANDS} == {
        "modelmon serve", "modelmon worker", "modelmon report", "modelmon demo",
        "modelmon import", "modelmon backfill", "modelmon migrate", "modelmon tokens create",
        "modelmon tokens list", "modelmon tokens revoke", "modelmon audit"}


@pytest.mark.parametrize("command", COMMANDS, ids=[p.prog for p in COMMANDS])
def test_every_option_has_help_and_says_its_default(command):
    assert any("--json" in a.option_strings for a in command._actions), command.prog
    text = command.format_help()
    for a in command._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        assert a.help, (command.prog, a.dest)
        if a.option_strings and not a.required and not isinstance(a, argparse._StoreTrueAction):
            shown = command._get_formatter()._get_help_string(a) % {"default": a.default}
            assert "default" in shown, (command.prog, a.dest, a.help)
    assert "(default: None)" not in text


def test_report_help_shows_a_default_from_the_formatter():
    report = next(p for p in COMMANDS if p.prog == "modelmon report")
    demo = next(p for p in COMMANDS if p.prog == "modelmon demo")
    assert "(default: demo-fraud)" in " ".join(demo.format_help().split())
    assert "--start START" in report.format_help()


POLICY = {"page": True, "page_unused_features": False}


@pytest.mark.parametrize(("decision", "importance", "policy", "said"), [
    ("critical", 0.4, POLICY, "page"),
    ("critical", None, POLICY, "page"),  # importance unknown: pages as before
    ("critical", 0.0, POLICY, "ticket (importance 0: the version does not use it)"),
    ("critical", 0.0, {**POLICY, "page_unused_features": True}, "page"),
    ("critical", 0.4, {**POLICY, "page": False}, "ticket (policy: page false)"),
    ("warning", 0.4, POLICY, "ticket"),
    ("ok", 0.4, POLICY, "-"),
])
def test_alert_says_why_a_decision_tickets(decision, importance, policy, said):
    assert alert(decision, importance, policy) == said


def feature(name: str, importance: float | None, decision: str) -> dict:
    return {"feature": name, "psi": 0.5, "psi_band": "major", "ks_statistic": 0.2,
            "ks_pvalue": 1e-9, "missing_rate": 0.0, "importance": importance,
            "decision": decision}


def test_drift_table_has_importance_and_alert_columns():
    report = {"model": "m", "window_start": "a", "window_end": "b", "empty": False,
              "policy": POLICY, "versions": [{
                  "version": "v2", "n": 500, "reference": {"source": "upload"},
                  "features": [feature("mean radius", 0.7, "critical"),
                               feature("x4", 0.0, "critical")], "prediction": None}]}
    lines = render("drift", report).splitlines()
    head = next(ln for ln in lines if ln.startswith("feature"))
    assert head.split() == ["feature", "PSI", "band", "KS", "D", "p", "missing", "importance",
                            "decision", "alert"]
    radius = next(ln for ln in lines if ln.startswith("mean radius"))
    x4 = next(ln for ln in lines if ln.startswith("x4"))
    assert " 0.7 " in radius and radius.endswith("critical  page")
    assert x4.endswith("critical  ticket (importance 0: the version does not use it)")


def test_cohorts_table_carries_the_gap():
    gap = {"n": 900, "validation_error": 0.05, "production_error": 0.09, "ci_low": 0.075,
           "ci_high": 0.11, "gap": 0.04, "lines": {"warning": 0.07, "critical": 0.1},
           "decision": "warning"}
    report = {"model": "m", "window_start": "a", "window_end": "b", "empty": False,
              "versions": [{"version": "v1", "n": 900, "cohort_keys": {},
                            "generalization_gap": {"overall": gap, "cohorts": [
                                {**gap, "cohort_key": "region", "cohort": "eu"}]}},
                           {"version": "v0", "n": 5, "cohort_keys": {},
                            "generalization_gap": None}]}
    text = render("cohorts", report)
    assert "version v1: generalization gap" in text
    overall = next(ln for ln in text.splitlines() if ln.startswith("(overall)"))
    assert overall.split() == ["(overall)", "900", "0.05", "0.09", "0.075", "0.11", "0.04",
                               "warning", "0.07,", "critical", "0.1", "warning"]
    assert any(ln.startswith("region=eu ") for ln in text.splitlines())
    assert "version v0: generalization gap: - (no validation error registered" in text


def test_compare_is_a_table_not_a_python_dict():
    from app.api.weights import COMPARED

    text = render("compare", COMPARED)
    assert "{" not in text and "'" not in text
    assert any(ln.split() == ["base", "v1", "l1", "lambda=0.001"] for ln in text.splitlines())
    assert any(ln.startswith("sparsity_jump") and ln.endswith("warning")
               for ln in text.splitlines())
    assert "zeroed: country" in text


def test_the_console_does_not_cut_lines_in_a_pipe():
    out = io.StringIO()
    console(out).print("x" * 300)
    assert out.getvalue() == "x" * 300 + "\n"


def test_json_from_migrate_and_tokens(tmp_path):
    import json

    from tests.cli.test_report_cli import modelmon

    env = {"MODELMON_DATABASE_URL": f"sqlite:///{tmp_path}/m.db"}
    out = modelmon("migrate", "--json", cwd=tmp_path, **env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["revision"]
    out = modelmon("tokens", "create", "--scope", "read", "--name", "ci", "--json",
                   cwd=tmp_path, **env)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["token"].startswith("mm_") and made["scopes"] == ["read"]
    assert made["models"] is None and made["name"] == "ci"
    out = modelmon("tokens", "revoke", made["id"], "--json", cwd=tmp_path, **env)
    assert out.returncode == 0 and json.loads(out.stdout) == {"id": made["id"], "revoked": True}
    out = modelmon("audit", "--json", cwd=tmp_path, **env)
    actions = [json.loads(ln)["action"] for ln in out.stdout.splitlines()]
    assert actions == ["token.revoke", "token.create"]
