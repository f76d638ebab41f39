"""The stored metric names live in one catalogue; the docs and the history report follow it."""

from __future__ import annotations

import re

from app.evaluation.catalogue import METRICS
from app.evaluation.checks.docs import BEGIN, END, checks_table, replace_between
from tests.conftest import ROOT


def test_docs_list_exactly_the_catalogue_by_job():
    text = (ROOT / "docs" / "jobs.md").read_text()
    documented: dict[str, str] = {}
    for job in ("drift", "calibration", "cohorts", "labels"):
        rows = re.findall(rf"^\| `[a-z_]+` \| {job} \| .* \| (.*) \|$", text, flags=re.M)
        assert rows, job
        for row in rows:
            for name in re.findall(r"`([a-z0-9_]+)`", row):
                documented[name] = job
    assert documented == {name: m.job for name, m in METRICS.items()}


def test_the_docs_table_of_checks_is_the_one_the_declarations_render():
    text = (ROOT / "docs" / "jobs.md").read_text()
    assert replace_between(text, BEGIN, END, checks_table()) == text, (
        "docs/jobs.md's table of checks differs from the declarations: run "
        "`python scripts/docs-tables.py --write`")


def test_history_refuses_a_name_outside_the_catalogue(client):
    assert client.post("/v1/models", json={"name": "m", "task": "regression", "features": [
        {"name": "x", "type": "numeric"}]}).status_code == 201
    r = client.get("/v1/models/m/history", params={"metric": "feature_psy"})
    assert r.status_code == 404
    assert all(name in r.json()["message"] for name in METRICS)


def test_every_job_a_check_is_stored_by_has_its_evaluation():
    from app.evaluation.checks import JOBS
    from app.evaluation.evaluate import PARTS

    assert tuple(PARTS) == JOBS == ("drift", "calibration", "cohorts", "labels")
