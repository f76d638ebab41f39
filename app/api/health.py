"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import ErrorBody
from app.storage import migrate

# No token, ever: `security: []` says so in the spec (a generated client sends none).
router = APIRouter(tags=["health"])
PUBLIC: dict[str, object] = {"security": []}
# What the guards in front of every route answer (app/api/guards.py): a NUL in the URL, or a
# Host name the service does not answer to while it listens on loopback only.
REFUSED: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "a NUL character in the URL"},
    421: {"model": ErrorBody, "description": "a Host name not allowed (MODELMON_ALLOWED_HOSTS)"}}


@router.get("/healthz", summary="The process is alive", openapi_extra=PUBLIC,
            responses={**REFUSED,
                       200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
async def healthz() -> dict[str, str]:
    """On the event loop, never in the thread pool: requests waiting there (on a busy or
    frozen database) cannot delay the answer, nor can any load (app/api/connections.py)."""
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated to this release's "
            "head or past it", openapi_extra=PUBLIC,
            responses={**REFUSED,
                200: {"content": {"application/json": {"example": {
                    "status": "ok", "database": "reachable", "migration": "0004"}}}},
                503: {"description": "not ready", "content": {"application/json": {"example": {
                    "status": "unavailable", "database": "unreachable",
                    "error": "OperationalError"}}}}})
def readyz(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    """200 once the database answers and its schema is at this release's head, or past it (a newer
    release migrated it first); otherwise 503 with Retry-After, so that a load balancer or
    orchestrator holds traffic back. Needs no token."""
    head = migrate.head_revision()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = migrate.current_revision(engine)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "error": type(exc).__name__},
            status_code=503, headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    if current != head and not migrate.newer_than_release(current):
        return JSONResponse(
            {"status": "unavailable", "database": "reachable", "migration": current,
             "expected": head, "hint": "run `modelmon migrate`"},
            status_code=503, headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    body = {"status": "ok", "database": "reachable", "migration": current}
    if current != head:  # a newer release migrated it: this one serves on it until replaced
        body["release_migration"] = head
    return JSONResponse(body)
