"""What a scrape sees: the families a token limited to some models may read, and /metrics of
`modelmon worker`, which has no API: a small threaded HTTP server on its own port
(MODELMON_WORKER_METRICS_HOST/PORT), with /healthz for a liveness probe."""

from __future__ import annotations

import copy
import hmac
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric

log = logging.getLogger("modelmon.metrics")


class ModelsOnly:
    """``registry``'s families with only the series of ``models`` among those labelled by
    model; a family without a `model` label (the service's own: HTTP, jobs, database, process)
    is kept whole. What a token limited to some models may scrape."""

    def __init__(self, registry: CollectorRegistry, models: Collection[str]) -> None:
        self.registry = registry
        self.models = models

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            kept = copy.copy(family)
            kept.samples = [s for s in family.samples
                            if "model" not in s.labels or s.labels["model"] in self.models]
            yield kept


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not worth a log line


def metrics_wsgi_app(registry: CollectorRegistry, token: str | None) -> Callable[..., Any]:
    """GET /metrics (a bearer token required when ``token`` is set, as on the API's
    /metrics) and GET /healthz; anything else is 404."""
    exposition = make_wsgi_app(registry, disable_compression=False)
    expected = f"Bearer {token}".encode() if token else None

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok"}']
        if path != "/metrics":
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"code":"not_found","message":"only /metrics and /healthz are served"}']
        sent = environ.get("HTTP_AUTHORIZATION", "").encode()
        if expected is not None and not hmac.compare_digest(sent, expected):
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("WWW-Authenticate", "Bearer")])
            return [b'{"code":"unauthorized","message":"send Authorization: Bearer <token> '
                    b'(MODELMON_METRICS_TOKEN)"}']
        return exposition(environ, start_response)

    return app


def start_metrics_server(registry: CollectorRegistry, host: str, port: int,
                         token: str | None) -> WSGIServer:
    """Serve in a daemon thread; returns the server (``server_address`` has the bound port,
    ``shutdown()`` stops it)."""
    server = make_server(host, port, metrics_wsgi_app(registry, token),
                         ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="modelmon-metrics",
                     daemon=True).start()
    log.info("serving /metrics on http://%s:%d/metrics", host, server.server_address[1],
             extra={"event": "metrics_server", "host": host, "port": server.server_address[1]})
    return server
