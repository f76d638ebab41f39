"""The audit trail: every administrative request (registering, changing and deleting models
and versions, uploading references and weights, opening and cancelling maintenance windows),
whoever made it and how it ended, kept in `audit_log`. A refusal of a genuine token (a scope
or model it lacks, its rate, revoked or expired) carries its id and name like a success."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.storage import tokens

log = logging.getLogger("modelmon.audit")
ACTIONS = (
    ("POST", re.compile(r"^/v1/models/?$"), "model.register"),
    ("PATCH", re.compile(r"^/v1/models/[^/]+/?$"), "model.update"),
    ("DELETE", re.compile(r"^/v1/models/[^/]+/?$"), "model.delete"),
    ("POST", re.compile(r"^/v1/models/[^/]+/versions/?$"), "version.register"),
    ("PATCH", re.compile(r"^/v1/models/[^/]+/versions/[^/]+/?$"), "version.update"),
    ("DELETE", re.compile(r"^/v1/models/[^/]+/versions/[^/]+/?$"), "version.delete"),
    ("POST", re.compile(r"^/v1/models/[^/]+/versions/[^/]+/reference/?$"), "reference.upload"),
    ("POST", re.compile(r"^/v1/models/[^/]+/versions/[^/]+/weights/?$"), "weights.upload"),
    ("POST", re.compile(r"^/v1/models/[^/]+/maintenance/?$"), "maintenance.open"),
    ("DELETE", re.compile(r"^/v1/models/[^/]+/maintenance/[^/]+/?$"), "maintenance.cancel"),
)


# An upload with ?replace=true (weights or a reference of a version with stored predictions)
# is recorded as a replacement: `weights.replace`, `reference.replace`.
_REPLACE = re.compile(r"(?:^|&)replace=(?:true|1|yes|on)(?:&|$)", re.IGNORECASE)


def action_of(method: str, path: str, query: str = "") -> str | None:
    name = next((name for verb, pattern, name in ACTIONS
                 if verb == method and pattern.match(path)), None)
    if name in ("weights.upload", "reference.upload") and _REPLACE.search(query):
        return name.replace(".upload", ".replace")
    return name


class AuditTrail:
    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        action = (action_of(scope.get("method", ""), scope.get("path", ""),
                            scope.get("query_string", b"").decode("latin-1"))
                  if scope["type"] == "http" else None)
        if action is None:
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # the caller's token, also when it was refused: a scope or model it lacks (403),
            # its rate (429), or a genuine token revoked or expired (401)
            state = scope.get("state", {})
            principal: Any = state.get("principal") or state.get("refused")
            await run_in_threadpool(self._record, action, scope.get("path", ""), status[0],
                                    principal)

    def _record(self, action: str, path: str, status: int, principal: Any) -> None:
        try:
            with self.engine.begin() as conn:
                tokens.audit(conn=conn, token_id=getattr(principal, "token_id", None),
                             token_name=getattr(principal, "name", None), action=action,
                             target=path, status=status)
        except Exception as exc:  # noqa: BLE001 - the database may be down; the answer stands
            log.warning("could not record %s on %s (%s): %s", action, path, status,
                        type(exc).__name__)
