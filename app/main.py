"""The FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from app import __version__
from app.api import errors, health, ingest, models, reports
from app.api.schemas import LabelBatch, ModelCreate, PredictionBatch, VersionCreate
from app.jobs.scheduler import JobScheduler
from app.settings import Settings, get_settings
from app.storage.db import make_engine
from app.storage.partitions import PartitionManager

log = logging.getLogger("modelmon")

# Routes that read their own body (to enforce limits and name every bad field) document it
# through these schemas.
_BODY_SCHEMAS = (ModelCreate, VersionCreate, PredictionBatch, LabelBatch)


def create_app(settings: Settings | None = None, *, run_scheduler: bool | None = None
               ) -> FastAPI:
    """The service. The scheduler runs inside it when ``settings.scheduler_enabled`` (tests
    pass ``run_scheduler=False`` and drive ticks themselves)."""
    settings = settings or get_settings()
    if run_scheduler is None:
        run_scheduler = settings.scheduler_enabled
    engine = make_engine(settings)
    partitions = PartitionManager(engine)

    scheduler = JobScheduler(engine, settings, partitions) if run_scheduler else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        try:
            partitions.ensure_ahead(settings.partition_days_ahead)
        except Exception as exc:  # noqa: BLE001 - serve anyway; /readyz tells the truth
            log.warning("could not create partitions at start: %s", type(exc).__name__)
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.shutdown()
        engine.dispose()

    app = FastAPI(
        title="modelmon",
        version=__version__,
        description="Production model monitoring: ingest predictions and labels, register "
        "model versions, and read drift, calibration, cohort and weight reports.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.partitions = partitions
    errors.install(app, retry_after=settings.retry_after_seconds,
                   max_details=settings.max_error_details)

    async def _psycopg_down(request, exc):  # noqa: ANN001, ANN202 - raw COPY path
        return errors.error_response(errors.unavailable(settings.retry_after_seconds))

    app.add_exception_handler(psycopg.OperationalError, _psycopg_down)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(ingest.router)
    app.include_router(reports.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in _BODY_SCHEMAS],
        ref_template="#/components/schemas/{model}",
    )
    spec.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    app.openapi_schema = spec
    return spec
