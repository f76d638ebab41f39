"""Logs: one JSON object a line with the request id (the client's X-Request-ID or a generated
one, echoed in the response), one line per request with its route template, status and
duration; text lines for a terminal."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from app.observability.logs import JsonFormatter, TextFormatter, configure_logging, use_json


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("modelmon")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _requests(out: io.StringIO) -> list[dict]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [x for x in lines if x.get("event") == "request"]


def test_request_id_round_trip_and_one_json_line_per_request(client, json_lines) -> None:
    r = client.get("/v1/models/nope", headers={"X-Request-ID": "req-42.a:b"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "req-42.a:b"
    generated = client.get("/v1/models")
    rid = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    # an id that could forge log fields or headers is replaced, never echoed
    bad = client.get("/v1/models", headers={"X-Request-ID": "x" * 129})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])
    odd = client.get("/healthz", headers={"X-Request-ID": 'a" b'})
    assert odd.headers["x-request-id"] != 'a" b'

    lines = _requests(json_lines)
    assert len(lines) == 4  # one line per request
    first, second = lines[0], lines[1]
    assert first["request_id"] == "req-42.a:b"
    assert (first["method"], first["route"], first["path"], first["status"]) == (
        "GET", "/v1/models/{model}", "/v1/models/nope", 404)
    assert first["duration_seconds"] >= 0 and first["level"] == "info"
    assert first["logger"] == "modelmon.http" and first["time"].endswith("Z")
    assert (second["request_id"], second["route"], second["status"]) == (rid, "/v1/models", 200)
    assert [x["request_id"] for x in lines[2:]] == [bad.headers["x-request-id"],
                                                    odd.headers["x-request-id"]]


def test_lines_logged_while_serving_carry_the_request_id(client, json_lines) -> None:
    r = client.post("/v1/predictions", content=b"{not json",
                    headers={"content-type": "application/json", "X-Request-ID": "r-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "r-1"
    (line,) = _requests(json_lines)
    assert (line["request_id"], line["route"], line["status"]) == ("r-1", "/v1/predictions",
                                                                   400)
    logging.getLogger("modelmon.test").info("outside a request")
    outside = json.loads(json_lines.getvalue().splitlines()[-1])
    assert "request_id" not in outside


def test_text_lines_for_a_terminal() -> None:
    record = logging.LogRecord("modelmon.jobs", logging.INFO, __file__, 1, "job %s: %s",
                               ("drift", "success"), None)
    record.outcome, record.results = "success", 3
    line = TextFormatter().format(record)
    assert re.fullmatch(r"\S+ \S+ INFO modelmon.jobs job drift: success "
                        r"outcome=success results=3", line)
    parsed = json.loads(JsonFormatter().format(record))
    assert parsed["message"] == "job drift: success" and parsed["results"] == 3


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_json("auto", io.StringIO()) and not use_json("auto", Tty())
    assert use_json("json", Tty()) and not use_json("text", io.StringIO())


def test_configure_logging_routes_uvicorn_through_one_handler() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", "warning")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.WARNING
        assert logging.getLogger("uvicorn.error").handlers == []
        assert logging.getLogger("uvicorn.access").disabled
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("uvicorn.access").disabled = False
