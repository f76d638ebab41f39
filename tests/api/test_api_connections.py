"""Idle and slow connections cannot starve the service (app/api/connections.py): idle ones are
shed first, past the connection cap or their timeouts; /healthz answers 200 whatever the
load; a header that trickles or grows is refused. The last test holds 10,000 idle
connections against a real `modelmon serve` while a client's batches are stored."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time

import httpx2
import pytest
from sqlalchemy import create_engine, select

from app.cli.serve import uvicorn_options
from app.main import create_app
from app.settings import Settings
from app.storage.tables import predictions
from tests.conftest import ROOT, LiveServer, clean, free_port, own_pg_database
from tests.factories import binary_model, prediction, version
from tests.helpers import wait_ready

GUARD = 10  # seconds any wait here may take before the test fails instead of hanging


def served(app, settings: Settings) -> LiveServer:
    """The app on a real socket with the connection handling of `modelmon serve`."""
    options = uvicorn_options(settings, None)
    return LiveServer(app, **{k: options[k] for k in ("http", "backlog", "timeout_keep_alive")})


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    return s


def closed_by_server(s: socket.socket) -> bytes:
    """What the server wrote before closing the connection (it must close it)."""
    received = b""
    while chunk := s.recv(65536):
        received += chunk
    s.close()
    return received


def shed(app, reason: str) -> float:
    """modelmon_http_shed_total{reason} as the app's /metrics counts it."""
    return app.state.registry.get_sample_value("modelmon_http_shed_total", {"reason": reason})


def still_open(s: socket.socket) -> bool:
    """Neither closed nor answered (looked at without reading)."""
    s.settimeout(0)
    try:
        return not s.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        s.settimeout(GUARD)


@pytest.fixture
def app_and_settings(pg_url):
    made = []

    def make(**over) -> tuple:
        settings = Settings(database_url=pg_url, **over)
        app = create_app(settings, run_scheduler=False)
        made.append(app)
        return app, settings

    yield make
    for app in made:
        clean(app.state.engine)
        app.state.engine.dispose()


def test_past_the_cap_the_oldest_idle_connections_are_closed_and_busy_ones_kept(
        app_and_settings):
    app, settings = app_and_settings(max_connections=10, body_read_timeout_seconds=3.0,
                                     idle_timeout_seconds=60, header_timeout_seconds=60)
    with served(app, settings) as server:
        busy = connect(server.port)  # oldest of all, but a request is in progress on it
        busy.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        time.sleep(0.2)
        idle = [connect(server.port) for _ in range(9)]
        time.sleep(0.2)
        assert all(still_open(s) for s in idle)  # 10 open: at the cap, nothing shed
        newer = [connect(server.port) for _ in range(5)]
        for s in idle[:5]:  # the five oldest idle ones make room, oldest first
            assert closed_by_server(s) == b""
        assert all(still_open(s) for s in idle[5:] + newer)
        assert shed(app, "idle") == 5 and shed(app, "overloaded") == 0
        r = httpx2.get(f"{server.url}/healthz", timeout=GUARD)
        assert r.status_code == 200
        # the busy connection was never shed: its request ends as its body stalls
        assert closed_by_server(busy).startswith(b"HTTP/1.1 408")
        for s in idle[5:] + newer:
            s.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(app_and_settings):
    app, settings = app_and_settings(idle_timeout_seconds=1.5, header_timeout_seconds=0.3)
    with served(app, settings) as server:
        fresh = connect(server.port)
        time.sleep(0.8)
        assert still_open(fresh)  # the header timeout runs from a header's first byte only
        assert closed_by_server(fresh) == b""  # before: open for ever (no timer until a reply)
        kept = connect(server.port)  # between keep-alive requests too
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert closed_by_server(kept).startswith(b"HTTP/1.1 200")


def test_a_header_that_trickles_is_408_after_the_header_timeout(app_and_settings):
    app, settings = app_and_settings(idle_timeout_seconds=0.5, header_timeout_seconds=1.5)
    with served(app, settings) as server:
        s = connect(server.port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        for _ in range(int(GUARD / 0.2)):  # a byte every 0.2 s resets no timer
            try:
                s.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)
            if not still_open(s):
                break
        try:
            answer = closed_by_server(s)
        except ConnectionResetError:  # the last bytes crossed the close
            answer = b"reset"
        assert answer.startswith(b"HTTP/1.1 408") or answer == b"reset", answer[:200]
        s2 = connect(server.port)  # same, once, without racing: the whole answer
        s2.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        answer = closed_by_server(s2).decode()
        assert answer.startswith("HTTP/1.1 408"), answer[:200]
        assert '"code":"request_timeout"' in answer and "MODELMON_HEADER_TIMEOUT_SECONDS" in answer
        assert shed(app, "header_timeout") == 2


def test_a_header_past_its_limit_is_431_and_memory_is_not_spent(app_and_settings):
    app, settings = app_and_settings()
    with served(app, settings) as server:
        s = connect(server.port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        sent = 0
        try:
            for _ in range(10_000):  # 80 MB if the server kept reading
                s.sendall(b"X-Pad: " + b"a" * 8000 + b"\r\n")
                sent += 8009
        except OSError:
            pass
        assert sent < 10_000 * 8009  # refused long before the end
        s.close()
        s = connect(server.port)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                  + b"X-Pad: " + b"a" * 70_000 + b"\r\n")
        answer = closed_by_server(s).decode()
        assert answer.startswith("HTTP/1.1 431"), answer[:200]
        assert '"code":"header_too_large"' in answer
        assert shed(app, "header_too_large") == 2


def test_past_the_cap_of_requests_in_progress_health_answers_and_the_rest_is_503(
        app_and_settings):
    app, settings = app_and_settings(max_connections=10, body_read_timeout_seconds=3.0,
                                     retry_after_seconds=7)
    with served(app, settings) as server:
        stalled = []
        for _ in range(10):
            s = connect(server.port)
            s.sendall(b"POST /v1/models HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            stalled.append(s)
        time.sleep(0.3)
        for _ in range(3):
            assert httpx2.get(f"{server.url}/healthz", timeout=GUARD).status_code == 200
        r = httpx2.post(f"{server.url}/v1/models", json=binary_model(), timeout=GUARD)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "overloaded" and r.headers["retry-after"] == "7"
        assert shed(app, "overloaded") == 1
        for s in stalled:
            assert closed_by_server(s).startswith(b"HTTP/1.1 408")
        r = httpx2.post(f"{server.url}/v1/models", json=binary_model(), timeout=GUARD)
        assert r.status_code == 201, r.text


IDLE = 10_000


@pytest.fixture
def idle_db():
    with own_pg_database("modelmon_idle") as url:
        yield url


def _raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_ten_thousand_idle_connections_leave_health_and_ingest_serving(idle_db):
    """10,000 sockets connected and silent, held by this process: `modelmon serve` sheds
    them (past MODELMON_MAX_CONNECTIONS, oldest first) while /healthz answers 200 and every
    batch a client sends meanwhile is stored. Before, past 1,000 every request was 503."""
    limit = _raise_open_files(IDLE + 500)
    assert limit >= IDLE + 500, f"open-file limit {limit}: cannot hold {IDLE} connections"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELMON_DATABASE_URL": idle_db, "MODELMON_LOG_LEVEL": "warning",
           "MODELMON_SCHEDULER_ENABLED": "false", "MODELMON_IDLE_TIMEOUT_SECONDS": "60",
           "MODELMON_HEADER_TIMEOUT_SECONDS": "60"}  # nothing shed by time: only by the cap
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env)
    held: list[socket.socket] = []
    try:
        wait_ready(url, proc)
        with httpx2.Client(base_url=url, timeout=GUARD) as client:
            assert client.post("/v1/models", json=binary_model()).status_code == 201
            assert client.post("/v1/models/fraud/versions", json=version()).status_code == 201
            sent = []
            for step in range(IDLE // 500):
                held += [socket.create_connection(("127.0.0.1", port), timeout=GUARD)
                         for _ in range(500)]
                assert client.get("/healthz").status_code == 200
                batch = [prediction(step * 20 + i) for i in range(20)]
                r = client.post("/v1/predictions", json={"records": batch})
                assert r.status_code == 200 and r.json()["accepted"] == 20, r.text
                sent += [rec["prediction_id"] for rec in batch]
            assert len(held) == IDLE
            # the server holds at most its cap of them (1,000 by default), not 10,000
            assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 1000 + 300
            assert httpx2.get(f"{url}/healthz", timeout=GUARD).status_code == 200
        engine = create_engine(idle_db)
        try:
            with engine.connect() as conn:
                stored = sorted(conn.execute(select(predictions.c.prediction_id)).scalars())
        finally:
            engine.dispose()
        assert stored == sorted(sent)
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
