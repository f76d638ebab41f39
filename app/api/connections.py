"""Connections cannot starve the service: idle ones are shed first, liveness always answers.

uvicorn's own limit (``limit_concurrency``) counts every open connection, so clients that
connect and send nothing (1,100 of them) made it answer 503 to every request, /healthz too,
and it keeps such a connection for ever: its keep-alive timer starts only after a first
response. The HTTP protocol here (uvicorn's httptools protocol, which ``modelmon serve``
uses) replaces that:

- a connection that sends nothing, fresh or between keep-alive requests, is closed after
  ``MODELMON_IDLE_TIMEOUT_SECONDS``; the header of a request must be complete within
  ``MODELMON_HEADER_TIMEOUT_SECONDS`` of its first byte, however slowly it trickles (408),
  and within ``MAX_HEADER_BYTES`` (431);
- past ``MODELMON_MAX_CONNECTIONS`` open connections, each new one closes the oldest that
  has no request in progress (idle, or still sending its header), so idle clients go first
  and new work is served;
- past ``MODELMON_MAX_CONNECTIONS`` requests in progress, a request is answered 503 with
  Retry-After (and its connection closed), except /healthz: liveness answers while the
  process is alive. Requests wait on bodies only within ``MODELMON_BODY_READ_TIMEOUT_SECONDS``
  (api/body.py), so that count is made of real work.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.api.errors import error_response
from app.errors import ApiError, Problem
from app.settings import Settings

log = logging.getLogger("modelmon.api")

# Bytes a request's header may take (llhttp, the parser, sets no limit of its own: a client
# could otherwise stream header lines into memory until the header timeout).
MAX_HEADER_BYTES = 64 * 1024
# Paths answered whatever the load: the liveness probe.
LIVENESS = frozenset({"/healthz"})
# Seconds between two log lines summing up shed connections and refused requests.
REPORT_EVERY_SECONDS = 10.0


class Tally:
    """What the connections of one server share: those with no request in progress, oldest
    first (a dict keeps insertion order), and what was shed or refused, logged as one line
    REPORT_EVERY_SECONDS after the first of them and counted at once in
    modelmon_http_shed_total (``counter``: the app's, when it has one)."""

    def __init__(self, counter: Any = None) -> None:
        self.idle: dict[GuardedHttp, None] = {}
        self.shed = 0
        self.refused = 0
        self.pending: asyncio.TimerHandle | None = None
        self.counter = counter

    def closed(self, reason: str, n: int = 1) -> None:
        """modelmon_http_shed_total{reason}: idle, overloaded, header_timeout,
        header_too_large."""
        if self.counter is not None:
            self.counter.labels(reason).inc(n)

    def count(self, loop: asyncio.AbstractEventLoop, shed: int = 0, refused: int = 0) -> None:
        self.shed += shed
        self.refused += refused
        if shed:
            self.closed("idle", shed)
        if refused:
            self.closed("overloaded", refused)
        if self.pending is None:
            self.pending = loop.call_later(REPORT_EVERY_SECONDS, self.report)

    def report(self) -> None:
        self.pending = None
        log.warning("past MODELMON_MAX_CONNECTIONS in the last %.0f s: %d idle connection(s) "
                    "closed, %d request(s) answered 503 overloaded", REPORT_EVERY_SECONDS,
                    self.shed, self.refused)
        self.shed = self.refused = 0


def raw_response(err: ApiError) -> bytes:
    """An error written straight to the transport (before any request exists to answer
    through the app), in the one JSON error shape; the connection closes after it."""
    body = json.dumps(err.body(), separators=(",", ":")).encode("ascii")
    head = (f"HTTP/1.1 {err.status} {_REASONS[err.status]}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _slow_header(timeout: float) -> ApiError:
    return ApiError(408, "request_timeout",
                    f"the request header was not complete within {timeout:g} s "
                    "(MODELMON_HEADER_TIMEOUT_SECONDS); send it again, whole",
                    [Problem("header read timed out", field="header")])


def _large_header() -> ApiError:
    return ApiError(431, "header_too_large",
                    f"the request header exceeds {MAX_HEADER_BYTES} bytes",
                    [Problem(f"limit is {MAX_HEADER_BYTES} bytes", field="header")])


def _overloaded(retry_after: int) -> Any:
    return error_response(ApiError(
        503, "overloaded", "the service has too many requests in progress; nothing was "
        "stored. Retry after the delay in Retry-After.",
        [Problem("requests in progress at MODELMON_MAX_CONNECTIONS", field="connection")],
        headers={"Retry-After": str(retry_after), "Connection": "close"}))


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of this module's docstring."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, max_connections: int,
                 header_timeout: float, retry_after: int) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limit_concurrency = None  # uvicorn's count of open connections: replaced here
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.retry_after = retry_after
        if not hasattr(server_state, "modelmon_tally"):
            server_state.modelmon_tally = Tally(_shed_counter(self.app))
        self.tally: Tally = server_state.modelmon_tally
        self.header_timer: asyncio.TimerHandle | None = None
        self.reading_header = True  # between requests: what arrives is the next header
        self.header_bytes = 0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its idle (keep-alive) timer only after a first response
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self._idle()
        self._shed()

    def _idle(self) -> None:
        """No request in progress: the newest of the idle."""
        self.tally.idle.pop(self, None)
        self.tally.idle[self] = None

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _shed(self) -> None:
        """Past the cap, close the oldest connections with no request in progress (never
        this new one). They leave the count at once: their close completes later."""
        excess = len(self.connections) - self.max_connections
        shed = 0
        while excess > shed:
            oldest = next((c for c in self.tally.idle if c is not self), None)
            if oldest is None:  # every other connection is busy: this one is served
                break
            del self.tally.idle[oldest]
            self.connections.discard(oldest)
            oldest.transport.close()
            shed += 1
        if shed:
            self.tally.count(self.loop, shed=shed)

    def _header_late(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined header late: close after this answer
            return
        self.transport.write(raw_response(_slow_header(self.header_timeout)))
        self.transport.close()
        self.tally.closed("header_timeout")

    def data_received(self, data: bytes) -> None:
        if self.reading_header:
            if not self.header_bytes:  # a header begins: it has until the timer to end
                self._stop_header_timer()
                self.header_timer = self.loop.call_later(self.header_timeout,
                                                         self._header_late)
            self.header_bytes += len(data)
        super().data_received(data)
        if (self.reading_header and self.header_bytes > MAX_HEADER_BYTES
                and not self.transport.is_closing()):
            self.transport.write(raw_response(_large_header()))
            self.transport.close()
            self.tally.closed("header_too_large")

    def on_headers_complete(self) -> None:
        self.reading_header = False
        self._stop_header_timer()
        self.tally.idle.pop(self, None)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_header = True  # what follows is the next request's (pipelined) header
        self.header_bytes = 0

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.idle.pop(self, None)
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if (len(self.tasks) >= self.max_connections
                and cycle.scope.get("path") not in LIVENESS):
            app = _overloaded(self.retry_after)
            self.tally.count(self.loop, refused=1)
        super()._start_asgi_task(cycle, app)


def _shed_counter(app: Any) -> Any:
    """The modelmon_http_shed_total counter of the app uvicorn serves (it may be wrapped in
    uvicorn's middleware), or None for an app without modelmon's metrics."""
    for _ in range(4):
        metrics = getattr(getattr(app, "state", None), "metrics", None)
        if metrics is not None:
            return getattr(metrics, "shed", None)
        app = getattr(app, "app", None)
    return None


def protocol(settings: Settings, max_connections: int) -> Any:
    """The protocol class ``modelmon serve`` hands uvicorn (``http=``), with its limits; a
    partial of an importable class, so it reaches ``--workers`` processes by pickling."""
    return functools.partial(GuardedHttp, max_connections=max_connections,
                             header_timeout=settings.header_timeout_seconds,
                             retry_after=settings.retry_after_seconds)
