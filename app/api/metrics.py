"""GET /metrics, and the middleware that times and logs every request with its request id."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import Credentials, caller_key, client_address, principal_of
from app.auth import Principal
from app.errors import ApiError, Problem
from app.observability.exposition import ModelsOnly
from app.observability.logs import REQUEST_ID, request_id_from

log = logging.getLogger("modelmon.http")
router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus exposition (service and model-quality metrics)",
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"example": (
                '# TYPE modelmon_feature_psi gauge\n'
                'modelmon_feature_psi{feature="amount",model="fraud",version="v2"} 0.31\n')}}},
                       401: {"description": "a token is required and was not sent"},
                       403: {"description": "the token has neither metrics, read nor admin"},
                       429: {"description": "over the caller's rate limit"}})
async def metrics(request: Request, creds: Credentials) -> Response:
    """Open unless a token is required: MODELMON_METRICS_TOKEN (a static token for the
    scraper), or, when API tokens are required, any token with the metrics, read or admin
    scope (either is accepted when both apply). A token limited to some models sees only
    their series of the families labelled by model."""
    principal = await _scraper(request, creds)
    registry: Any = request.app.state.registry
    if principal is not None and principal.models is not None:
        registry = ModelsOnly(registry, principal.models)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _scraper(request: Request, creds: Credentials) -> Principal | None:
    """Who scrapes: the API token's principal, or None for the static token or an open
    /metrics; 401, 403 or 429 otherwise, refusals counted as on every route."""
    token = request.app.state.settings.metrics_token
    sent = request.headers.get("authorization", "")
    static_ok = bool(token) and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())
    if request.app.state.auth.required and not static_ok:
        return await principal_of(request, creds, "metrics")
    limits = request.app.state.rate_limits
    if token and not static_ok:
        limits.refused(client_address(request))
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token> "
                       "(MODELMON_METRICS_TOKEN)",
                       [Problem("missing or wrong bearer token", field="authorization")],
                       headers={"WWW-Authenticate": "Bearer"})
    limits.request(caller_key(request))
    return None


class RequestObserver:
    """Pure ASGI middleware, outermost: gives every request an id (the client's X-Request-ID
    when usable, else a new one; echoed in the response's X-Request-ID and on every log line
    the request causes), observes its duration by route template (never the raw path, which
    would make a label of every model name and typo), and writes one log line for it."""

    def __init__(self, app: ASGIApp, histogram: Any) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        sent = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                     if k == b"x-request-id"), None)
        request_id = request_id_from(sent)
        token = REQUEST_ID.set(request_id)
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "__unmatched__"
            method = scope.get("method", "")
            self.histogram.labels(template, method, str(status[0])).observe(seconds)
            client = scope.get("client")
            log.info("%s %s %d %.3fs", method, template, status[0], seconds, extra={
                "event": "request", "method": method, "route": template,
                "path": scope.get("path", ""), "status": status[0],
                "duration_seconds": round(seconds, 6),
                "client": client[0] if client else None})
            REQUEST_ID.reset(token)
