"""Translate every failure into the one JSON error shape, with the right status.

A database that cannot be reached is 503 with Retry-After; anything unexpected is logged
and answered as JSON 500 (and is a bug to fix: no input should get there).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from app.errors import (
    ApiError,
    Conflict,
    DomainError,
    Invalid,
    Malformed,
    NotFound,
    Problem,
    TooLarge,
    Unavailable,
)

log = logging.getLogger("modelmon.api")


class SafeJSONResponse(JSONResponse):
    """ASCII-escaped JSON: a client's odd key (a lone surrogate, say) can never make the error
    response itself fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


# Failures that mean the database could not be reached: a 503 with Retry-After.
DB_DOWN: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError,
                                        sa_exc.TimeoutError)

# The one place a domain error's kind becomes an HTTP status.
STATUS: dict[type[DomainError], int] = {
    Malformed: 400, NotFound: 404, Conflict: 409, TooLarge: 413, Invalid: 422, Unavailable: 503,
}


def status_of(err: DomainError) -> int:
    """The status of a domain error's kind (its nearest kind in ``STATUS``)."""
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    raise TypeError(f"no HTTP status for {type(err).__name__}")


def error_response(err: ApiError | DomainError, max_details: int | None = None,
                   retry_after: int | None = None) -> SafeJSONResponse:
    if isinstance(err, DomainError):
        headers = ({"Retry-After": str(retry_after)}
                   if isinstance(err, Unavailable) and retry_after is not None else None)
        return SafeJSONResponse(err.body(max_details), status_code=status_of(err),
                                headers=headers)
    return SafeJSONResponse(err.body(max_details), status_code=err.status, headers=err.headers)


def _loc(loc: tuple[Any, ...]) -> tuple[int | None, str | None]:
    """FastAPI/pydantic locations -> (record index, dotted field)."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    index = None
    if len(parts) >= 2 and parts[0] == "records" and isinstance(parts[1], int):
        index, parts = parts[1], parts[2:]
    field = ""
    for p in parts:
        field += f"[{p}]" if isinstance(p, int) else (f".{p}" if field else str(p))
    return index, field or None


def validation_problems(errors: list[dict[str, Any]]) -> list[Problem]:
    """Pydantic errors without their ``input`` (never echoed)."""
    out = []
    for e in errors:
        index, field = _loc(tuple(e.get("loc", ())))
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append(Problem(msg, field=field, index=index))
    return out


def unavailable(retry_after: int) -> ApiError:
    return ApiError(
        503, "database_unavailable",
        "the database is unreachable; nothing was stored. Retry after the delay in Retry-After.",
        [Problem("database connection failed or timed out", field="database")],
        headers={"Retry-After": str(retry_after)},
    )


def install(app: FastAPI, *, retry_after: int, max_details: int,
            on_db_down: Any = None) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, err: ApiError) -> SafeJSONResponse:
        return error_response(err, max_details)

    @app.exception_handler(DomainError)
    async def _domain_error(_req: Request, err: DomainError) -> SafeJSONResponse:
        return error_response(err, max_details, retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, err: RequestValidationError) -> SafeJSONResponse:
        return error_response(ApiError(
            422, "validation_error", "the request is invalid; see details",
            validation_problems(list(err.errors())),
        ), max_details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, err: StarletteHTTPException) -> SafeJSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        message = str(err.detail) if isinstance(err.detail, str) else "request failed"
        return error_response(ApiError(err.status_code, code, message, [Problem(message)],
                                       headers=getattr(err, "headers", None)))

    async def _db_down(_req: Request, err: Exception) -> SafeJSONResponse:
        log.warning("database unavailable: %s", type(err).__name__)
        if on_db_down is not None:
            on_db_down()
        return error_response(unavailable(retry_after))

    for exc_type in DB_DOWN:
        app.add_exception_handler(exc_type, _db_down)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, err: Exception) -> SafeJSONResponse:
        log.exception("unhandled error", exc_info=err)
        return error_response(ApiError(500, "internal_error",
                                       "an unexpected error occurred; it has been logged",
                                       [Problem("internal error")]))
