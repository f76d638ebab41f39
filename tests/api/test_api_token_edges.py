"""The edges of API tokens: a token limited to some models scrapes only their series; bad
tokens and missing ones are limited per address before any database lookup (counted here
with a listener on the engine); a verified token keeps scraping while the database is
unreachable; every audited refusal of a genuine token names it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, select
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings
from app.storage import tokens
from app.storage.tables import audit_log
from tests.api.test_api_auth import MODEL, bearer, make_token, record
from tests.conftest import clean, free_port
from tests.tcp_proxy import TcpProxy

# 10 refused authentications per address over an hour-long window: the allowance cannot
# renew itself during a test.
LIMITED = {"auth": "on", "token_cache_seconds": 0, "rate_limit_burst_seconds": 3600,
           "rate_limit_auth_failures_per_second": 10 / 3600}
ALLOWANCE = 10


def clear_of_the_hour(margin: float = 120.0) -> None:
    """The limiter's windows are aligned to the clock (the `limits` library's sliding window
    counter): past an hour's boundary the last hour's refusals count only in part, and the
    allowance comes back. A test that spends the allowance starts at least ``margin`` seconds
    before the next boundary, waiting past it if need be."""
    left = 3600 - time.time() % 3600
    if left < margin:
        time.sleep(left + 1)


@contextmanager
def queries(engine: Engine) -> Iterator[list[str]]:
    """The statements ``engine`` runs meanwhile."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


@pytest.fixture
def edges(db_url: str) -> Iterator[tuple]:
    clear_of_the_hour()
    app = create_app(Settings(database_url=db_url, **LIMITED), run_scheduler=False)
    with TestClient(app) as client:
        yield app, client
    clean(app.state.engine)
    app.state.engine.dispose()


def fake_token(i: int) -> str:
    """Shaped like a token, known to no database."""
    return f"mm_{i:012x}_" + "A" * 43


@pytest.mark.parametrize("kind", ["distinct", "same", "missing"])
def test_a_thousand_bad_tokens_cost_no_query_past_the_allowance_and_end_in_429(edges, kind):
    app, client = edges
    sent = {"distinct": lambda i: bearer(fake_token(i)), "same": lambda i: bearer(fake_token(7)),
            "missing": lambda i: {}}[kind]
    codes, cost = [], []  # per request: its status and the statements it ran
    with queries(app.state.engine) as seen:
        for i in range(1000):
            before = len(seen)
            codes.append(client.get("/v1/models", headers=sent(i)).status_code)
            cost.append(seen[before:])
    refused = codes.count(401)
    assert ALLOWANCE <= refused <= ALLOWANCE + 1  # +1: the window's weighted edge
    assert codes[:ALLOWANCE] == [401] * ALLOWANCE
    assert set(codes[refused:]) == {429}
    # past the allowance, not one statement
    assert sum(len(c) for c in cost[refused:]) == 0
    # within it: a distinct token costs its lookup, a refused one is remembered by its hash,
    # a missing one costs nothing
    lookups = [len([q for q in c if "FROM api_tokens" in q]) for c in cost[:refused]]
    assert lookups == {"distinct": [1] * refused, "same": [1] + [0] * (refused - 1),
                       "missing": [0] * refused}[kind]
    r = client.get("/v1/models", headers=sent(1000))
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert r.json()["details"][0]["field"] == "authorization"


def test_a_failing_address_keeps_its_verified_tokens_and_others_are_not_held(db_url):
    clear_of_the_hour()
    app = create_app(Settings(database_url=db_url, **{**LIMITED, "token_cache_seconds": 600}),
                     run_scheduler=False)
    try:
        with TestClient(app) as client, TestClient(app, client=("10.9.8.7", 4000)) as other:
            known, fresh = make_token(app.state.engine, "read"), make_token(app.state.engine,
                                                                            "read")
            assert client.get("/v1/models", headers=bearer(known)).status_code == 200
            for i in range(ALLOWANCE + 2):
                client.get("/v1/models", headers=bearer(fake_token(i)))
            with queries(app.state.engine) as seen:
                # verified within MODELMON_TOKEN_CACHE_SECONDS: from memory, still served
                assert client.get("/v1/models", headers=bearer(known)).status_code == 200
                # any other token from this address waits, unlooked-up
                assert client.get("/v1/models", headers=bearer(fresh)).status_code == 429
            assert [s for s in seen if "api_tokens" in s] == []
            # another address is not held by this one's failures
            assert other.get("/v1/models", headers=bearer(fresh)).status_code == 200
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()


def samples(text: str) -> list[tuple[str, dict[str, str]]]:
    return [(s.name, s.labels) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


def test_a_token_limited_to_a_model_scrapes_only_that_models_series(db_url):
    app = create_app(Settings(database_url=db_url, auth="on", metrics_cache_seconds=0),
                     run_scheduler=False)
    try:
        with TestClient(app) as client:
            engine = app.state.engine
            admin, ingest = make_token(engine, "admin"), make_token(engine, "ingest")
            for name in ("m", "other"):
                assert client.post("/v1/models", json={**MODEL, "name": name},
                                   headers=bearer(admin)).status_code == 201
                assert client.post(f"/v1/models/{name}/versions", json={"version": "v1"},
                                   headers=bearer(admin)).status_code == 201
                r = client.post("/v1/predictions", json={"records": [record(name, "p")]},
                                headers=bearer(ingest))
                assert r.status_code == 200, r.text
            everything = samples(client.get("/metrics", headers=bearer(admin)).text)
            only_m = client.get("/metrics", headers=bearer(make_token(engine, "read",
                                                                        models=["m"])))
            assert only_m.status_code == 200
            limited = samples(only_m.text)
            scraper = make_token(engine, "metrics", models=["m"])
            by_scraper = samples(client.get("/metrics", headers=bearer(scraper)).text)
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()
    models_seen = {labels["model"] for _, labels in everything if "model" in labels}
    assert {"m", "other"} <= models_seen  # the unlimited scrape has both
    for scrape in (limited, by_scraper):
        assert {labels["model"] for _, labels in scrape if "model" in labels} == {"m"}
    names = {name for name, _ in limited}
    # the model's own series (service counters and model-quality families alike) stay ...
    assert ("modelmon_ingested_records_total", {"model": "m", "outcome": "accepted"}) \
        in limited
    assert ("modelmon_model_last_prediction_timestamp_seconds", {"model": "m"}) in limited
    # ... and so do the service-wide families without a model label
    assert "modelmon_build_info" in names
    assert "modelmon_http_request_duration_seconds_count" in names


@pytest.fixture
def proxied(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """The test database behind a proxy this test can cut (the server itself is left
    alone)."""
    url = make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432), free_port())
    proxy.start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.stop()


@pytest.mark.parametrize("outage_seconds", [3600.0, 0.0])
def test_a_verified_token_scrapes_while_the_database_is_unreachable(proxied, outage_seconds):
    proxy, url = proxied
    down = False
    app = create_app(Settings(database_url=url, auth="on", token_cache_seconds=0,
                              token_outage_seconds=outage_seconds, db_connect_timeout_seconds=1,
                              retry_after_seconds=2), run_scheduler=False)
    try:
        with TestClient(app) as client:
            scraper = make_token(app.state.engine, "metrics")
            unseen = make_token(app.state.engine, "metrics")
            assert client.get("/metrics", headers=bearer(scraper)).status_code == 200
            proxy.stop()
            down = True
            r = client.get("/metrics", headers=bearer(scraper))
            if outage_seconds:
                # verified before the outage: the scrape goes on, the service's own series
                # with it (the model-quality ones need the database)
                assert r.status_code == 200, r.text
                names = {name for name, _ in samples(r.text)}
                assert {"modelmon_build_info", "modelmon_database_errors_total"} <= names
            else:
                assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
            # a token never verified cannot be checked: 503, not 401
            r = client.get("/metrics", headers=bearer(unseen))
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
            # nor a wrong secret for a remembered id
            wrong = scraper[:-4] + ("AAAA" if not scraper.endswith("AAAA") else "BBBB")
            assert client.get("/metrics", headers=bearer(wrong)).status_code == 503
            proxy.start()
            down = False
            assert client.get("/metrics", headers=bearer(unseen)).status_code == 200
    finally:
        if down:
            proxy.start()
        clean(app.state.engine)
        app.state.engine.dispose()


def audited(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [(r.action, r.token_id, r.token_name, r.status) for r in conn.execute(
            select(audit_log).order_by(audit_log.c.id))]


def test_every_audited_refusal_of_a_genuine_token_names_it(db_url):
    app = create_app(Settings(database_url=db_url, auth="on", token_cache_seconds=0,
                              rate_limit_requests_per_second=0.2, rate_limit_burst_seconds=10),
                     run_scheduler=False)
    try:
        with TestClient(app) as client:
            engine = app.state.engine
            admin = make_token(engine, "admin", name="pipeline")
            assert client.post("/v1/models", json=MODEL, headers=bearer(admin)).status_code \
                == 201
            with engine.begin() as conn:
                only_m, only_m_token = tokens.create(conn=conn, name="m only",
                                                     scopes=["admin"], models=["m"],
                                                     expires_at=None)
                viewer, viewer_token = tokens.create(conn=conn, name="viewer", scopes=["read"],
                                                     models=None, expires_at=None)
                gone, gone_token = tokens.create(conn=conn, name="gone", scopes=["admin"],
                                                 models=None, expires_at=None)
                tokens.revoke(conn=conn, token_id=gone.id)
            cases = [
                (viewer_token, "/v1/models", {**MODEL, "name": "x"}, 403),  # scope
                (only_m_token, "/v1/models", {**MODEL, "name": "y"}, 403),  # not limited to y
                (gone_token, "/v1/models", {**MODEL, "name": "z"}, 401),  # revoked
                (gone_token[:-4] + "AAAA", "/v1/models", MODEL, 401),  # not its secret
            ]
            for token, path, body, status in cases:
                assert client.post(path, json=body, headers=bearer(token)).status_code == status
            # past its rate (2 per 10 s, one used above): refused, and audited with the token
            codes = [client.post("/v1/models/m/versions", json={"version": f"v{i}"},
                                 headers=bearer(only_m_token)).status_code for i in range(2)]
            assert codes == [201, 429]
        rows = audited(engine)
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()
    assert rows[1:] == [
        ("model.register", viewer.id, "viewer", 403),
        ("model.register", only_m.id, "m only", 403),
        ("model.register", gone.id, "gone", 401),
        ("model.register", None, None, 401),  # a secret that is not the token's names none
        ("version.register", only_m.id, "m only", 201),
        ("version.register", only_m.id, "m only", 429)]
