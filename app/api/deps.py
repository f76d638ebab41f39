"""Dependencies shared by the routers: the engine, settings, body and upload reading, the
report snapshot and the error responses each route documents."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine

from app.api.body import content_type, read_json, upload_file
from app.api.errors import validation_problems
from app.api.schemas import ErrorBody
from app.errors import ApiError, Problem
from app.evaluation import figures
from app.evaluation.profiles import ProfileCache
from app.evaluation.windows import repeatable_read
from app.jsonvalues import find_unstorable
from app.registry.versions import require_version
from app.settings import Settings
from app.storage.partitions import PartitionManager

RequestSchema = TypeVar("RequestSchema", bound=BaseModel)


# async: each reads the app's state and cannot block, so FastAPI calls it on the event loop
# instead of handing it to a worker thread (four thread hops a request on the ingest routes).
async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_partitions(request: Request) -> PartitionManager:
    return request.app.state.partitions


async def get_profiles(request: Request) -> ProfileCache:
    return request.app.state.profiles


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PartitionsDep = Annotated[PartitionManager, Depends(get_partitions)]
ProfilesDep = Annotated[ProfileCache, Depends(get_profiles)]
# Weights and references of a version with stored predictions are fixed (docs/api.md).
ReplaceQuery = Annotated[bool, Query(description=(
    "replace what a version with stored predictions already has: without it, an upload "
    "that differs from the stored one answers 409 version_in_use. A replacement is recorded "
    "in the audit log as weights.replace / reference.replace"))]


async def read_batch(request: Request, settings: Settings) -> Any:
    return await read_json(request)


async def read_model(request: Request, settings: Settings,
                     model: type[RequestSchema]) -> RequestSchema:
    """Parse a small JSON body into ``model``: non-finite numbers and unstorable strings are
    422 with their path before pydantic sees them, and pydantic's errors never echo input."""
    body = await read_json(request)
    bad = find_unstorable(body)
    if bad:
        raise ApiError(422, "validation_error", "the request holds values that cannot be stored",
                       [Problem(problem, field=path) for path, problem in bad])
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", "the request is invalid; see details",
                       validation_problems(exc.errors())) from None


def body_doc(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI requestBody for a route that reads its body itself (see app/main.py)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{schema.__name__}"},
                    "example": (schema.model_config.get("json_schema_extra") or {}).get("example"),
                }
            },
        }
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error statuses, each the one error shape."""
    return {status: {"model": ErrorBody} for status in statuses}


def in_snapshot(engine: Engine, fn: Callable[[Connection], Any]) -> Awaitable[Any]:
    """``fn`` in a worker thread, in one transaction on one snapshot: a window's summaries
    and any rows summarised again are read together. Costly pure figures (exact KS p-values)
    come from the shared memo when a job or another request computed them first."""
    def go() -> Any:
        # costly pure figures another process stored are read, new ones stored after
        with repeatable_read(engine.connect()) as conn, conn.begin(), \
                figures.shared(conn) as store:
            out = fn(conn)
        store.flush(engine)
        return out
    return run_in_threadpool(go)


async def receive_upload(request: Request, engine: Engine, model: str, version: str,
                         setting: str, accepted: tuple[str, ...], hint: str,
                         process: Callable[[Path, str], dict[str, Any]]) -> JSONResponse:
    """404 for an unknown model or version before reading anything, then the body streamed
    to a temporary file and processed in a worker thread; 201 with what was stored."""
    ctype = content_type(request)
    await run_in_threadpool(require_version, engine=engine, model=model, version=version)
    async with upload_file(request, setting, accepted, hint,
                           request.app.state.upload_slots) as path:
        body = await run_in_threadpool(process, path, ctype)
    return JSONResponse(body, status_code=201)
