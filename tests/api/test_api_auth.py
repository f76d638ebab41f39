"""API tokens: every route but health refuses without one (401), refuses the wrong scope or
model (403) and serves the right one; tokens are stored as hashes, revoked and expired ones
are refused, admin actions are audited, and the default follows the bind address."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.main import create_app
from app.settings import Settings
from app.storage import tokens
from app.storage.tables import api_tokens, audit_log
from tests.conftest import ROOT, clean
from tests.factories import iso

MODEL = {"name": "m", "task": "regression", "features": [{"name": "x", "type": "numeric"}],
         "cohort_keys": []}


@pytest.fixture
def settings(db_url: str) -> Settings:
    # refused authentications are limited per address (tests/api/test_api_token_edges.py);
    # these tests refuse many on purpose
    return Settings(database_url=db_url, auth="on", token_cache_seconds=0,
                    rate_limit_auth_failures_per_second=100)


def make_token(engine, *scopes: str, models: list[str] | None = None,
               expires_at: datetime | None = None, name: str = "t") -> str:
    with engine.begin() as conn:
        return tokens.create(conn=conn, name=name, scopes=list(scopes), models=models,
                             expires_at=expires_at)[1]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def operator_and_viewer(client, engine, model: dict) -> tuple[str, str]:
    """An admin token ("operator") that has registered ``model``, and a read token
    ("viewer")."""
    admin = make_token(engine, "admin", name="operator")
    read = make_token(engine, "read", name="viewer")
    assert client.post("/v1/models", json=model, headers=bearer(admin)).status_code == 201
    return admin, read


@pytest.fixture
def world(client, engine):
    admin = make_token(engine, "admin", name="pipeline")
    assert client.post("/v1/models", json=MODEL, headers=bearer(admin)).status_code == 201
    assert client.post("/v1/models", json={**MODEL, "name": "other"},
                       headers=bearer(admin)).status_code == 201
    assert client.post("/v1/models/m/versions", json={"version": "v1"},
                       headers=bearer(admin)).status_code == 201
    return admin


def record(model: str = "m", pid: str = "p1") -> dict:
    return {"model": model, "version": "v1", "prediction_id": pid,
            "timestamp": iso(datetime.now(UTC)), "features": {"x": 1.0},
            "prediction": {"value": 2.0}}


def routes(app) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI spec, path parameters filled in."""
    return [(method.upper(), path.replace("{model}", "m").replace("{version}", "v1"))
            for path, ops in app.openapi()["paths"].items() for method in ops]


def test_every_route_but_health_needs_a_token(app, client, world):
    checked = 0
    for method, path in routes(app):
        r = client.request(method, path, json={})
        if path in ("/healthz", "/readyz"):
            assert r.status_code != 401, path
            continue
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["code"] == "unauthorized"
        assert r.json()["details"][0]["field"] == "authorization"
        checked += 1
    assert checked >= 14
    for bad in ("Bearer nope", "Basic dXNlcjpwYXNz",
                "Bearer mm_0123456789ab_" + "A" * 43):
        r = client.get("/v1/models", headers={"authorization": bad})
        assert r.status_code == 401


def test_scopes(client, engine, world):
    ingest, read, metrics = (make_token(engine, s) for s in ("ingest", "read", "metrics"))
    batch = {"records": [record()]}
    # ingest: writes batches, reads nothing, registers nothing
    assert client.post("/v1/predictions", json=batch, headers=bearer(ingest)).status_code == 200
    assert client.post("/v1/labels", json={"records": [
        {"model": "m", "prediction_id": "p1", "label": 2.0, "timestamp": iso(
            datetime.now(UTC))}]}, headers=bearer(ingest)).status_code == 200
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/models/m/reports/drift"),
                         ("POST", "/v1/models"), ("GET", "/metrics")):
        r = client.request(method, path, json=MODEL, headers=bearer(ingest))
        assert r.status_code == 403, (method, path)
        assert r.json()["code"] == "forbidden"
    # read: reads, does not write
    assert client.get("/v1/models/m", headers=bearer(read)).status_code == 200
    assert client.get("/v1/models/m/reports/cohorts", headers=bearer(read)).status_code == 200
    assert client.get("/metrics", headers=bearer(read)).status_code == 200
    assert client.post("/v1/predictions", json=batch, headers=bearer(read)).status_code == 403
    assert client.post("/v1/models/m/versions", json={"version": "v2"},
                       headers=bearer(read)).status_code == 403
    # metrics: scrapes only
    assert client.get("/metrics", headers=bearer(metrics)).status_code == 200
    assert client.get("/v1/models", headers=bearer(metrics)).status_code == 403
    # admin: registers and reads
    assert client.get("/v1/models/m/versions", headers=bearer(world)).status_code == 200
    assert client.post("/v1/predictions", json=batch, headers=bearer(world)).status_code == 403


def test_a_token_limited_to_models(client, engine, world):
    only_m = make_token(engine, "read", "ingest", models=["m"])
    assert client.get("/v1/models/m", headers=bearer(only_m)).status_code == 200
    r = client.get("/v1/models/other", headers=bearer(only_m))
    assert r.status_code == 403 and r.json()["details"][0]["field"] == "model"
    assert [m["name"] for m in client.get("/v1/models", headers=bearer(only_m)).json()] == ["m"]
    r = client.post("/v1/predictions", headers=bearer(only_m),
                    json={"records": [record(pid="a"), record("other", "b")]})
    assert r.status_code == 403
    assert [(d["index"], d["field"]) for d in r.json()["details"]] == [(1, "model")]
    # nothing half-written
    assert client.post("/v1/predictions", headers=bearer(only_m),
                       json={"records": [record(pid="a")]}).json() == {"accepted": 1,
                                                                      "duplicates": 0}
    admin_m = make_token(engine, "admin", models=["m"])
    r = client.post("/v1/models", json={**MODEL, "name": "third"}, headers=bearer(admin_m))
    assert r.status_code == 403


def test_revoked_and_expired_tokens_are_refused(client, engine, world):
    token = make_token(engine, "read")
    assert client.get("/v1/models", headers=bearer(token)).status_code == 200
    with engine.begin() as conn:
        assert tokens.revoke(conn=conn, token_id=token.split("_")[1])
    r = client.get("/v1/models", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in r.json()["details"][0]["problem"]
    old = make_token(engine, "read", expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert client.get("/v1/models", headers=bearer(old)).status_code == 200
    with engine.begin() as conn:
        conn.execute(update(api_tokens).values(expires_at=datetime.now(UTC) - timedelta(1))
                     .where(api_tokens.c.id == old.split("_")[1]))
    r = client.get("/v1/models", headers=bearer(old))
    assert r.status_code == 401 and "expired" in r.json()["details"][0]["problem"]


def test_only_the_hash_is_stored_and_nothing_logs_the_token(client, engine, world, caplog):
    caplog.set_level(logging.DEBUG)
    token = make_token(engine, "read")
    client.get("/v1/models", headers=bearer(token))
    client.get("/v1/models", headers=bearer(token + "x"))
    with engine.connect() as conn:
        rows = conn.execute(select(api_tokens)).all()
    secret = token.split("_", 2)[2]
    assert all(secret not in str(tuple(r)) for r in rows)
    assert secret not in caplog.text


def test_admin_actions_are_audited(client, engine, world):
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
    assert [(r.action, r.token_name, r.status) for r in rows] == [
        ("model.register", "pipeline", 201), ("model.register", "pipeline", 201),
        ("version.register", "pipeline", 201)]
    client.post("/v1/models/m/versions", json={"version": "v9"})  # refused: audited too
    with engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.id.desc())).first()
    assert (last.action, last.token_id, last.status) == ("version.register", None, 401)


DOCS = ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")


def test_docs_need_a_read_token_can_be_public_or_turned_off(settings, client, engine):
    read, ingest = make_token(engine, "read"), make_token(engine, "ingest")
    for path in DOCS:
        r = client.get(path)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", path
        assert client.get(path, headers=bearer(ingest)).status_code == 403, path
        assert client.get(path, headers=bearer(read)).status_code == 200, path
    spec = client.get("/openapi.json", headers=bearer(read)).json()
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert {"token": []} in spec["paths"]["/v1/predictions"]["post"]["security"]
    assert not any(path in spec["paths"] for path in DOCS)
    assert "/openapi.json" in client.get("/docs", headers=bearer(read)).text
    for changed, status in (({"docs_public": True}, 200), ({"docs_enabled": False}, 404)):
        app = create_app(settings.model_copy(update=changed), run_scheduler=False)
        with TestClient(app) as c:
            assert [c.get(path).status_code for path in DOCS] == [status] * len(DOCS)
            assert c.get("/healthz").status_code == 200
            assert c.get("/v1/models").status_code == 401
        app.state.engine.dispose()


@pytest.mark.parametrize(("host", "mode", "required"), [
    ("127.0.0.1", "auto", False), ("::1", "auto", False), ("localhost", "auto", False),
    ("0.0.0.0", "auto", True), ("10.1.2.3", "auto", True), ("127.0.0.1", "on", True),
    ("0.0.0.0", "off", False)])
def test_tokens_are_required_beyond_loopback(db_url, host, mode, required, caplog):
    caplog.set_level(logging.WARNING)
    app = create_app(Settings(database_url=db_url, host=host, auth=mode), run_scheduler=False)
    try:
        with TestClient(app) as c:
            assert (c.get("/v1/models").status_code == 401) is required
        if not required:
            assert "authentication is off" in caplog.text.lower()
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()


def test_tokens_cli_creates_lists_and_revokes(tmp_path):
    env = {**os.environ, "MODELMON_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    assert run("migrate").returncode == 0
    out = run("tokens", "create", "--scope", "ingest", "--model", "m", "--expires", "30d",
              "--name", "server")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("mm_") and "shown once" in out.stderr
    listed = run("tokens", "list").stdout
    token_id = token.split("_")[1]
    assert token_id in listed and token.split("_", 2)[2] not in listed
    assert '"state": "active"' in listed
    assert run("tokens", "revoke", token_id).returncode == 0
    assert '"state": "revoked"' in run("tokens", "list").stdout
    assert run("tokens", "revoke", token_id).returncode == 1
    assert "token.revoke" in run("audit").stdout
    bad = run("tokens", "create", "--scope", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # a database file that is not there is named, not created empty
    env["MODELMON_DATABASE_URL"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    missing = run("tokens", "create", "--scope", "admin")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == (
        f"modelmon tokens: error: no SQLite database at {tmp_path / 'elsewhere.db'} "
        "(MODELMON_DATABASE_URL): point MODELMON_DATABASE_URL at the service's database, or "
        "run modelmon migrate to create one")
    assert not (tmp_path / "elsewhere.db").exists()
