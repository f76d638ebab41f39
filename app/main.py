"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from app import __version__
from app.api import errors, health, ingest, models, references, reports, spec, summaries, weights
from app.api import metrics as metrics_api
from app.api.audit import AuditTrail
from app.api.auth import Authenticator, is_loopback
from app.api.body import UploadSlots
from app.api.guards import ForwardedClient, LoopbackHosts, RejectNulInUrl
from app.api.metrics import RequestObserver
from app.api.ratelimit import RateLimits
from app.api.schemas import (
    LabelBatch,
    MaintenanceCreate,
    ModelCreate,
    ModelPatch,
    PredictionBatch,
    VersionCreate,
    VersionPatch,
)
from app.api.slots import IngestSlots
from app.bootstrap import Service, bootstrap, settle_heap, start_logging
from app.ingest import service as ingest_service
from app.ingest.service import SchemaCache
from app.observability.quality import QualityCollector, quality_snapshot
from app.pages import routes as pages
from app.settings import Settings, get_settings

log = logging.getLogger("modelmon")

# Routes that read their own body (to enforce limits and name every bad field) document it
# through these schemas.
_BODY_SCHEMAS = (ModelCreate, ModelPatch, VersionCreate, VersionPatch, PredictionBatch,
                 LabelBatch, MaintenanceCreate, summaries.SummaryUpload)


def _authenticator(engine: Any, settings: Settings) -> Authenticator:
    loopback = is_loopback(settings.host)
    required = settings.auth == "on" or (settings.auth == "auto" and not loopback)
    if not required:
        if loopback:
            log.warning("authentication is off: listening on %s only (MODELMON_AUTH=%s); "
                        "anyone on this machine can read and change everything",
                        settings.host, settings.auth)
        else:
            log.warning("AUTHENTICATION IS OFF (MODELMON_AUTH=off) while listening on %s: "
                        "ANYONE WHO CAN REACH THIS PORT CAN READ AND CHANGE EVERYTHING",
                        settings.host)
    return Authenticator(engine, required=required, cache_seconds=settings.token_cache_seconds,
                         outage_seconds=settings.token_outage_seconds)


def create_app(settings: Settings | None = None, *, run_scheduler: bool | None = None,
               settle: bool = False) -> FastAPI:
    """The service. The scheduler runs inside it when ``settings.scheduler_enabled`` (tests
    pass ``run_scheduler=False`` and drive ticks themselves). ``settle``: a served process,
    which settles its heap (bootstrap.settle_heap) once started, before it serves."""
    service = bootstrap(settings, run_scheduler=run_scheduler)
    settings, engine, registry = service.settings, service.engine, service.registry

    registry.register(QualityCollector(
        lambda: quality_snapshot(engine, settings),
        {"features": settings.metrics_max_features, "cohorts": settings.metrics_max_cohorts,
         "layers": settings.metrics_max_layers},
        ttl=settings.metrics_cache_seconds, interval_seconds=settings.job_interval_seconds))
    app = FastAPI(
        title="modelmon",
        version=__version__,
        description="Production model monitoring: ingest predictions and labels, register "
        "model versions, and read drift, calibration, cohort and weight reports.",
        lifespan=_lifespan(service, settle),
        # served by app/api/spec.py, behind a token where tokens are required
        docs_url=None, redoc_url=None, openapi_url=None,
        # operationId = the route's function name (unique), what generated clients call
        generate_unique_id_function=lambda route: route.name,
    )
    _state(app, service)
    _errors(app, service)
    _routes(app, service)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _lifespan(service: Service, settle: bool
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Partitions ahead (best effort: /readyz tells the truth), the read-ahead, the heap
    settled (``settle``), then the scheduler; on the way out the running window gets
    MODELMON_SHUTDOWN_TIMEOUT_SECONDS to finish."""
    settings, scheduler = service.settings, service.scheduler

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        try:
            service.partitions.ensure_ahead(settings.partition_days_ahead)
        except Exception as exc:  # noqa: BLE001 - serve anyway; /readyz tells the truth
            log.warning("could not create partitions at start: %s", type(exc).__name__)
        try:  # the recent versions' schemas and profiles, before the first batch needs them
            since = datetime.now(UTC) - timedelta(seconds=settings.job_window_seconds)
            warmed = ingest_service.warm(service.engine, _app.state.schemas, service.profiles,
                                         since=since)
            log.info("read ahead the reference profiles of %d recent versions", warmed)
        except Exception as exc:  # noqa: BLE001 - serve anyway: batches read them when needed
            log.warning("could not read ahead recent versions at start: %s",
                        type(exc).__name__)
        if settle:
            settle_heap()
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.shutdown(settings.shutdown_timeout_seconds)
        service.engine.dispose()

    return lifespan


def _state(app: FastAPI, service: Service) -> None:
    """What the routes and dependencies read from ``request.app.state``."""
    settings = service.settings
    app.state.auth = _authenticator(service.engine, settings)
    app.state.rate_limits = RateLimits(
        requests_per_second=settings.rate_limit_requests_per_second,
        records_per_second=settings.rate_limit_records_per_second,
        burst_seconds=settings.rate_limit_burst_seconds,
        auth_failures_per_second=settings.rate_limit_auth_failures_per_second)
    app.state.settings = settings
    app.state.engine = service.engine
    app.state.partitions = service.partitions
    app.state.profiles = service.profiles
    app.state.schemas = SchemaCache()
    app.state.registry = service.registry
    app.state.metrics = service.metrics
    app.state.upload_slots = UploadSlots(settings.max_concurrent_uploads,
                                         settings.retry_after_seconds)
    app.state.ingest_slots = IngestSlots(
        settings.ingest_slots, settings.db_hang_seconds, settings.retry_after_seconds,
        on_refused=service.metrics.shed.labels("ingest_wait").inc)


def _errors(app: FastAPI, service: Service) -> None:
    settings, service_metrics = service.settings, service.metrics
    errors.install(app, retry_after=settings.retry_after_seconds,
                   max_details=settings.max_error_details,
                   on_db_down=lambda: service_metrics.db_errors.labels("request").inc())

    async def _psycopg_down(request, exc):  # noqa: ANN001, ANN202 - raw COPY path
        service_metrics.db_errors.labels("request").inc()
        return errors.error_response(errors.unavailable(settings.retry_after_seconds))

    app.add_exception_handler(psycopg.OperationalError, _psycopg_down)


def _routes(app: FastAPI, service: Service) -> None:
    """The routers, then the guards in front of them, the outermost added last."""
    settings = service.settings
    app.include_router(health.router)
    # weights first: its GET .../versions/compare is matched before GET .../versions/{version}
    app.include_router(weights.router)
    app.include_router(models.router)
    app.include_router(ingest.router)
    app.include_router(references.router)
    app.include_router(reports.router)
    app.include_router(summaries.router)
    app.include_router(metrics_api.router)
    if settings.docs_enabled:
        app.include_router(spec.router)
        app.mount(spec.ASSETS, spec.assets(), name="docs-assets")
    if settings.pages_enabled:
        pages.install(app)
    app.add_middleware(RejectNulInUrl)
    if not app.state.auth.required and is_loopback(settings.host):
        app.add_middleware(LoopbackHosts, allowed=settings.allowed_hosts)
    app.add_middleware(AuditTrail, engine=service.engine)
    app.add_middleware(RequestObserver, histogram=service.metrics.http)
    if settings.trusted_proxies:
        app.add_middleware(ForwardedClient, proxies=settings.trusted_proxies,
                           header=settings.forwarded_header)


def create_served_app() -> FastAPI:
    """The factory each process of ``modelmon serve --workers N`` calls: logging as the
    settings say (a fresh process has none), then the service."""
    settings = get_settings()
    start_logging(settings)
    return create_app(settings, settle=True)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in _BODY_SCHEMAS],
        ref_template="#/components/schemas/{model}",
    )
    doc.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    app.openapi_schema = spec.describe(doc)
    return doc
