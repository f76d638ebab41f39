"""A client whose body stops arriving is answered 408 and its connection closed within the
read timeout, while other clients are served meanwhile (bounded, on loopback)."""

from __future__ import annotations

import os
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
                s.sendall(b"POST /v1/predictions HTTP/1.1\r\nHost: localhost\r\n"
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


def _upload_files() -> int:
    """Temporary upload files this process holds open."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "modelmon-upload-" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return n


def _start_upload(port: int, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/models/m/versions/v1/reference HTTP/1.1\r\nHost: localhost\r\n"
              b"Content-Type: text/csv\r\nContent-Length: 1000000\r\n\r\n" + body)
    return s


def _answer(s: socket.socket) -> str:
    received = b""
    while chunk := s.recv(65536):  # until the server closes the connection
        received += chunk
    s.close()
    return received.decode(errors="replace")


def test_uploads_take_a_file_only_once_their_body_arrives_and_are_capped(db_url):
    """Clients announcing a large upload and sending nothing hold a socket, not a temporary
    file; past MODELMON_MAX_CONCURRENT_UPLOADS uploads that do send are refused (429, read
    by a client that writes before it reads) instead of taking more files; slots come back."""
    app = create_app(Settings(database_url=db_url, body_read_timeout_seconds=2.0,
                              max_concurrent_uploads=2, retry_after_seconds=3),
                     run_scheduler=False)
    try:
        with LiveServer(app) as server:
            assert httpx2.post(f"{server.url}/v1/models", timeout=5, json={
                "name": "m", "task": "regression",
                "features": [{"name": "x", "type": "numeric"}]}).status_code == 201
            assert httpx2.post(f"{server.url}/v1/models/m/versions", timeout=5,
                               json={"version": "v1"}).status_code == 201
            silent = [_start_upload(server.port, b"") for _ in range(20)]
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # the old code opened a file per connection
                assert _upload_files() == 0
                time.sleep(0.05)
            sending = [_start_upload(server.port, b"x,value\n1,2\n") for _ in range(2)]
            deadline = time.monotonic() + 5
            while _upload_files() < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _upload_files() == 2
            refused = _answer(_start_upload(server.port, b"x,value\n1,2\n"))
            assert refused.startswith("HTTP/1.1 429"), refused[:200]
            assert '"code":"too_many_uploads"' in refused and "retry-after: 3" in refused
            for s in sending + silent:  # each stalls: 408, and its slot and file come back
                assert _answer(s).startswith("HTTP/1.1 408")
            assert _upload_files() == 0
            csv = "x,value\n" + "".join(f"{i},{i * 2}\n" for i in range(200))
            r = httpx2.post(f"{server.url}/v1/models/m/versions/v1/reference", timeout=10,
                            content=csv, headers={"content-type": "text/csv"})
            assert r.status_code == 201, r.text
    finally:
        clean(app.state.engine)
        app.state.engine.dispose()
