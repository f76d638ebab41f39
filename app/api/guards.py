"""Refusing URLs no database can store before any route sees them."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import ApiError, Problem


class RejectNulInUrl:
    """A NUL character (%00) in the path or the query string is a 400: Postgres text cannot
    hold it, and a name or parameter containing it would otherwise reach a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            where = ("path" if "\x00" in scope.get("path", "")
                     else "query" if b"%00" in query or b"\x00" in query else None)
            if where is not None:
                err = ApiError(400, "invalid_request", "the URL contains a NUL character "
                               "(%00); names and parameters cannot hold it",
                               [Problem("NUL character", field=where)])
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)
