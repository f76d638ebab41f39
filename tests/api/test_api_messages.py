"""Refusals that say how to fix them: the classes a label may take, the shape of a
prediction, the feature a misspelled name probably meant; and a `postgres://` URL taken as
what it means, a bad setting one line naming its variable."""

from __future__ import annotations

import subprocess
import sys

from app.settings import Settings
from tests.conftest import ROOT
from tests.factories import label, prediction, register


def problem(r) -> dict:
    assert r.status_code == 422, r.text
    return r.json()["details"][0]


def test_a_label_outside_the_classes_lists_them(client):
    register(client)
    client.post("/v1/predictions", json={"records": [prediction(0)]})
    p = problem(client.post("/v1/labels", json={"records": [label(0, value="spam")]}))
    assert p["field"] == "label" and "'fraud', 'legit'" in p["problem"]


def test_a_bare_prediction_shows_the_object_to_send(client):
    register(client)
    p = problem(client.post("/v1/predictions", json={"records": [prediction(0,
                                                                            prediction=0.5)]}))
    assert p["field"] == "prediction" and '{"score": 0.93}' in p["problem"]


def test_a_misspelled_feature_gets_a_did_you_mean(client):
    register(client)
    rec = prediction(0, features={"amuont": 3.0, "country": "DE"})
    p = problem(client.post("/v1/predictions", json={"records": [rec]}))
    assert p["field"] == "features.amuont" and "did you mean 'amount'?" in p["problem"]
    rec = prediction(0, features={"zzz": 3.0})
    assert "did you mean" not in problem(client.post("/v1/predictions",
                                                     json={"records": [rec]}))["problem"]


def test_postgres_urls_mean_postgresql_through_psycopg():
    for url in ("postgres://u:p@db:5432/m", "postgresql://u:p@db:5432/m"):
        assert Settings(database_url=url).database_url == "postgresql+psycopg://u:p@db:5432/m"
    assert Settings(database_url="sqlite:///x.db").database_url == "sqlite:///x.db"


def test_a_bad_setting_is_one_line_naming_its_variable(tmp_path):
    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
                              capture_output=True, text=True, timeout=60)

    out = run(MODELMON_DATABASE_URL="mysql://a/b")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "modelmon migrate: error: MODELMON_DATABASE_URL: unsupported database 'mysql': use "
        "postgresql+psycopg://... or sqlite:///..."]
    out = run(MODELMON_JOB_INTERVAL_SECONDS="-1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "MODELMON_JOB_INTERVAL_SECONDS" in out.stderr


def test_one_version_can_be_read(client):
    register(client, versions=("v1", "v2"))
    r = client.get("/v1/models/fraud/versions/v2")
    assert r.status_code == 200, r.text
    listed = client.get("/v1/models/fraud/versions").json()
    assert r.json() == listed[1] and r.json()["version"] == "v2"
    missing = client.get("/v1/models/fraud/versions/v9")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_version"
    assert client.get("/v1/models/ghost/versions/v1").json()["code"] == "unknown_model"
