"""An unreachable database is a 503 with Retry-After: never a 500, never a hang."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings
from tests.conftest import LiveServer, clean, free_port
from tests.factories import binary_model, label, prediction, register, version
from tests.helpers import stored
from tests.tcp_proxy import TcpProxy

TIMEOUT = 20  # seconds; a request that hangs longer fails the test


def assert_unavailable(r: httpx2.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    assert r.json()["code"] == "database_unavailable"


def _settings(url: str) -> Settings:
    return Settings(database_url=url, db_connect_timeout_seconds=1, retry_after_seconds=2)


@pytest.fixture
def proxied(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    url = make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432), free_port())
    proxy.start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.stop()


def test_postgres_going_away_and_coming_back(proxied):
    proxy, url = proxied
    app = create_app(_settings(url))
    try:
        with LiveServer(app) as server, httpx2.Client(base_url=server.url,
                                                      timeout=TIMEOUT) as c:
            register(c)
            assert c.post("/v1/predictions",
                          json={"records": [prediction(0)]}).json()["accepted"] == 1

            proxy.stop()
            assert_unavailable(c.post("/v1/predictions",
                                      json={"records": [prediction(1), prediction(2)]}))
            assert_unavailable(c.post("/v1/labels", json={"records": []}))
            assert_unavailable(c.post("/v1/models", json=binary_model("other")))
            assert_unavailable(c.get("/v1/models"))
            assert_unavailable(c.post("/v1/models/fraud/versions", json=version("v2")))
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"] == "2"
            assert c.get("/healthz").status_code == 200

            proxy.start()
            r = c.post("/v1/predictions", json={"records": [prediction(1), prediction(2)]})
            assert r.status_code == 200, r.text
            assert r.json() == {"accepted": 2, "duplicates": 0}
            assert c.get("/readyz").status_code == 200
        assert stored(app.state.engine)["predictions"] == 3
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()


def test_frozen_postgres_is_503_and_recovers(proxied):
    """A database that hangs (connections open, nothing answered: a stopped process or a
    proxy that stops forwarding) is a 503 after the hang bound plus a probe, not a request
    that waits for as long as the database is frozen; once it answers again, so does the
    service, and the batch refused meanwhile is stored exactly once when resent."""
    proxy, url = proxied
    app = create_app(Settings(database_url=url, db_connect_timeout_seconds=1,
                              retry_after_seconds=2, db_hang_seconds=1))
    try:
        with LiveServer(app) as server, httpx2.Client(base_url=server.url,
                                                      timeout=TIMEOUT) as c:
            register(c)
            batch = {"records": [prediction(1), prediction(2)]}
            assert c.post("/v1/predictions",
                          json={"records": [prediction(0)]}).json()["accepted"] == 1
            proxy.freeze()
            assert_unavailable(c.post("/v1/predictions", json=batch))  # mid-transaction
            assert_unavailable(c.get("/v1/models"))  # a new connection, refused by no one
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200
            proxy.thaw()
            r = c.post("/v1/predictions", json=batch)
            assert r.status_code == 200, r.text
            assert r.json() == {"accepted": 2, "duplicates": 0}
            assert c.get("/readyz").status_code == 200
        assert stored(app.state.engine)["predictions"] == 3
    finally:
        proxy.thaw()
        clean(app.state.engine)
        app.state.engine.dispose()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_postgres_is_503_within_the_connect_timeout(pg_url, kind):
    """`refused`: nothing listens. `silent`: a listener that never answers the handshake,
    as a blackholed host does; the connect timeout turns it into a 503."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    if kind == "silent":
        holder.listen(16)  # accepts TCP, never speaks Postgres
    else:
        holder.close()
    url = make_url(pg_url).set(host="127.0.0.1", port=port).render_as_string(
        hide_password=False)
    app = create_app(_settings(url))
    try:
        with LiveServer(app) as server, httpx2.Client(base_url=server.url,
                                                      timeout=TIMEOUT) as c:
            assert_unavailable(c.post("/v1/predictions", json={"records": [prediction(0)]}))
            assert_unavailable(c.post("/v1/labels", json={"records": []}))
            assert c.get("/readyz").status_code == 503
    finally:
        app.state.engine.dispose()
        holder.close()


def test_unopenable_sqlite_file_is_503(tmp_path):
    url = f"sqlite:///{tmp_path}/missing-dir/modelmon.db"
    app = create_app(_settings(url))
    with LiveServer(app) as server, httpx2.Client(base_url=server.url, timeout=TIMEOUT) as c:
        assert_unavailable(c.get("/v1/models"))
        assert_unavailable(c.post("/v1/predictions", json={"records": [prediction(0)]}))
    app.state.engine.dispose()


def test_a_slow_statement_on_a_live_database_is_left_alone(pg_url):
    """The hang guard cuts only waits on a database that no longer answers a new connection:
    a statement slower than the bound, on a database that answers, runs to its end."""
    from sqlalchemy import text

    from app.storage.db import make_engine

    engine = make_engine(Settings(database_url=pg_url, db_connect_timeout_seconds=1,
                                  db_hang_seconds=0.9))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_sleep(2.5), 42")).one()[1] == 42
    finally:
        engine.dispose()


# The documented bound on a frozen database (MODELMON_DB_HANG_SECONDS, its default here), with
# a second of slack: a bound the service must hold, not a timing benchmark.
HANG = 3.0
SLACK = 1.0
FROZEN_REQUESTS = (
    ("POST", "/v1/predictions", {"records": [prediction(7)]}),
    ("POST", "/v1/labels", {"records": [label(0)]}),
    ("POST", "/v1/models", binary_model("other")),
    ("POST", "/v1/models/fraud/versions", version("v2")),
    ("GET", "/v1/models/fraud/reports/drift", None),
    ("GET", "/v1/models/fraud/reports/calibration", None),
    ("GET", "/v1/models", None),
)


def _timed(call) -> tuple[object, float]:
    started = time.monotonic()
    out = call()
    return out, time.monotonic() - started


@pytest.mark.parametrize("method,path,body", FROZEN_REQUESTS,
                         ids=[f"{m} {p}" for m, p, _ in FROZEN_REQUESTS])
def test_a_frozen_database_is_503_within_the_hang_bound(proxied, method, path, body):
    """Every endpoint that touches the database, on a database frozen while its connections
    sit in the pool (the pooled connection's check is the first thing that waits), answers
    503 with Retry-After within MODELMON_DB_HANG_SECONDS; so does the next request, which
    needs a new connection; /metrics still answers (without the model-quality series)."""
    proxy, url = proxied
    app = create_app(Settings(database_url=url, db_connect_timeout_seconds=HANG,
                              db_hang_seconds=HANG, retry_after_seconds=2),
                     run_scheduler=False)
    try:
        with LiveServer(app) as server, httpx2.Client(base_url=server.url,
                                                      timeout=TIMEOUT) as c:
            register(c)
            assert c.post("/v1/predictions",
                          json={"records": [prediction(0)]}).status_code == 200
            proxy.freeze()
            for _ in range(2):  # the pooled connection, then a new one
                r, took = _timed(lambda: c.request(method, path, json=body))
                assert_unavailable(r)
                assert took <= HANG + SLACK, f"{method} {path}: 503 after {took:.1f} s"
            r, took = _timed(lambda: c.get("/metrics"))
            assert r.status_code == 200 and took <= HANG + SLACK, took
            proxy.thaw()
            assert c.request(method, path, json=body).status_code < 500
    finally:
        proxy.thaw()
        clean(app.state.engine)
        app.state.engine.dispose()


def _frozen_paths(engine, proxy: TcpProxy, fresh) -> Iterator[tuple[str, object]]:
    """(path, a call that waits on the frozen database there) for each way a transaction
    meets the database: the pooled connection's check, a statement, the commit, a new
    connection (of ``fresh``, an engine that has not yet seen the database frozen)."""
    from sqlalchemy import text

    from app.storage.db import PING_AFTER_IDLE_SECONDS

    with engine.connect() as conn:  # a connection into the pool
        conn.execute(text("SELECT 1"))
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)  # idle long enough to be checked at checkout
    proxy.freeze()
    yield "pooled connection", lambda: engine.connect().close()
    proxy.thaw()
    conn = engine.connect()
    conn.execute(text("CREATE TEMPORARY TABLE t (x int)"))
    proxy.freeze()
    yield "statement", lambda: conn.execute(text("SELECT count(*) FROM t")).one()
    conn.close()
    proxy.thaw()
    conn = engine.connect()
    conn.execute(text("CREATE TEMPORARY TABLE t (x int)"))
    conn.execute(text("INSERT INTO t VALUES (1)"))
    proxy.freeze()
    yield "commit", conn.commit
    conn.close()
    proxy.thaw()
    proxy.freeze()
    yield "new connection", lambda: fresh.connect().close()
    proxy.thaw()


def test_every_wait_on_a_frozen_database_ends_within_the_hang_bound(proxied):
    """The pooled connection's check, a statement, the commit and a new connection each end
    with a connection error within MODELMON_DB_HANG_SECONDS (what the API answers 503)."""
    from sqlalchemy.exc import OperationalError

    from app.storage.db import make_engine

    proxy, url = proxied
    settings = Settings(database_url=url, db_connect_timeout_seconds=HANG, db_hang_seconds=HANG)
    engine, fresh = make_engine(settings), make_engine(settings)
    try:
        for path, call in _frozen_paths(engine, proxy, fresh):
            started = time.monotonic()
            with pytest.raises(OperationalError):
                call()
            took = time.monotonic() - started
            assert took <= HANG + SLACK, f"{path}: failed after {took:.1f} s"
    finally:
        proxy.thaw()
        engine.dispose()
        fresh.dispose()
