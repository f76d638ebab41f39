"""The command line's HTTP client and the client package retry the same answers and the same
connection failures (each is installed on its own, so each declares the set; this holds them
equal), and the command line's client does what its set says."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from modelmon_client._http import CONNECTION_ERRORS as PACKAGE_CONNECTION_ERRORS
from modelmon_client._sender import RETRY_STATUSES

from app.cli import client
from app.cli.client import ApiClient, HttpError


def test_the_cli_and_the_client_package_retry_the_same_answers_and_failures():
    assert client.RETRYABLE == RETRY_STATUSES
    assert set(client.CONNECTION_ERRORS) == set(PACKAGE_CONNECTION_ERRORS)
    # "not now" answers only: a refusal sent again is refused again
    assert client.RETRYABLE == {408, 429, 502, 503, 504}


@contextmanager
def answering(*answers: int | str) -> Iterator[tuple[str, list[str]]]:
    """A server answering each request with the next status (or, for "garbage", a response
    that is not HTTP), then 200; yields its URL and the paths it was asked."""
    asked: list[str] = []
    queue = list(answers)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            answer = queue.pop(0) if queue else 200
            if answer == "garbage":
                self.wfile.write(b"not http at all\r\n\r\n")
                self.close_connection = True
                return
            body = b'{"ok": true}' if answer == 200 else b'{"code": "x", "message": "no"}'
            self.send_response(int(answer))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if answer in (429, 503):
                self.send_header("retry-after", "0")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", sorted(client.RETRYABLE))
def test_a_retryable_answer_is_sent_again(status, monkeypatch):
    monkeypatch.setattr(ApiClient, "_wait", lambda self, attempt, retry_after: None)
    with answering(status) as (url, asked):
        assert ApiClient(url, retries=2).get("/v1/x") == {"ok": True}
    assert asked == ["/v1/x", "/v1/x"]


def test_a_broken_response_is_sent_again(monkeypatch):
    monkeypatch.setattr(ApiClient, "_wait", lambda self, attempt, retry_after: None)
    with answering("garbage") as (url, asked):
        assert ApiClient(url, retries=2).get("/v1/x") == {"ok": True}
    assert asked == ["/v1/x", "/v1/x"]


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 500])
def test_a_refusal_is_not_sent_again(status, monkeypatch):
    monkeypatch.setattr(ApiClient, "_wait", lambda self, attempt, retry_after: None)
    with answering(status) as (url, asked), pytest.raises(HttpError) as err:
        ApiClient(url, retries=2).get("/v1/x")
    assert err.value.status == status
    assert asked == ["/v1/x"]
