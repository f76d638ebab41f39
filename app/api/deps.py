"""Dependencies shared by the routers: the engine, settings and body parsing."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from app.api.body import read_json
from app.api.errors import validation_problems
from app.errors import ApiError, Problem
from app.evaluation.profiles import ProfileCache
from app.jsonvalues import find_unstorable
from app.settings import Settings
from app.storage.partitions import PartitionManager

M = TypeVar("M", bound=BaseModel)


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_partitions(request: Request) -> PartitionManager:
    return request.app.state.partitions


def get_profiles(request: Request) -> ProfileCache:
    return request.app.state.profiles


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PartitionsDep = Annotated[PartitionManager, Depends(get_partitions)]
ProfilesDep = Annotated[ProfileCache, Depends(get_profiles)]


async def read_batch(request: Request, settings: Settings) -> Any:
    return await read_json(request, settings.max_body_bytes)


async def read_model(request: Request, settings: Settings, model: type[M]) -> M:
    """Parse a small JSON body into ``model``: non-finite numbers and unstorable strings are
    422 with their path before pydantic sees them, and pydantic's errors never echo input."""
    body = await read_json(request, settings.max_body_bytes)
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
