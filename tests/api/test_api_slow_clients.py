"""A client whose body stops arriving is answered 408 and its connection closed within the
read timeout, while other clients are served meanwhile (bounded, on loopback)."""

from __future__ import annotations

import socket
import time

import httpx2

from app.main import create_app
from app.settings import Settings
from tests.conftest import LiveServer, clean


def test_a_stalled_body_is_408_and_others_are_served(db_url):
    app = create_app(Settings(database_url=db_url, body_read_timeout_seconds=1.0),
                     run_scheduler=False)
    try:
        with LiveServer(app) as server:
            stalled = []
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                s.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                          b'{"records": [')
                stalled.append(s)
            started = time.monotonic()
            # others are served while those wait
            assert httpx2.get(f"{server.url}/healthz", timeout=5).status_code == 200
            assert httpx2.post(f"{server.url}/v1/models", timeout=5, json={
                "name": "m", "task": "regression",
                "features": [{"name": "x", "type": "numeric"}]}).status_code == 201
            for s in stalled:
                s.settimeout(5)
                received = b""
                while chunk := s.recv(65536):  # until the server closes the connection
                    received += chunk
                answer = received.decode(errors="replace")
                assert answer.startswith("HTTP/1.1 408"), answer[:200]
                assert '"code":"request_timeout"' in answer
                s.close()
            assert time.monotonic() - started < 5
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()
