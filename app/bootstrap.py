"""The service's parts assembled in one place: settings, logging, the engine, the migration,
the metrics registries and the scheduler. `modelmon serve` (through ``create_app``),
`modelmon worker` and `modelmon migrate` all start here, so a replica serving the API and a
worker running the jobs cannot drift apart in how they are built."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from app.evaluation.profiles import ProfileCache
from app.jobs.scheduler import JobScheduler
from app.observability.logs import configure_logging
from app.observability.metrics import ServiceMetrics, build_registries
from app.settings import Settings, get_settings
from app.storage.db import make_engine
from app.storage.partitions import PartitionManager


@dataclass(frozen=True)
class Service:
    """What one process of the service holds. ``registry`` is what its /metrics exposes;
    ``metrics`` are its own counters (in that registry, or in the per-process one under
    ``serve --workers N``); ``scheduler`` is None when this process runs no jobs."""

    settings: Settings
    engine: Engine
    partitions: PartitionManager
    profiles: ProfileCache
    registry: CollectorRegistry
    metrics: ServiceMetrics
    scheduler: JobScheduler | None


def start_logging(settings: Settings) -> None:
    """Logging as the settings say; a process's first step, since a fresh process (each of
    ``serve --workers N`` too) has none and the migration already logs."""
    configure_logging(settings.log_format, settings.log_level)


# The cyclic collector's youngest generation is collected after this many new container
# objects, not Python's 700: a 1,000-label batch makes some 10,000 (tuples, dicts, pairs),
# nearly all freed by their reference counts, and at 700 it paid about 15 young collections.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once start-up is done, before the first request or job: collect once, then freeze what
    is left (the loaded libraries, the read-ahead's schemas and profiles, about 200,000
    objects), so the collector's full passes scan only what was made since. Unfrozen, each
    full pass scanned them all, holding the interpreter 0.26-0.63 s (about every 25 label
    batches of 1,000; BENCHMARKS.md, "Collector pauses"): every request of the process waited
    that long. Frozen objects are still freed by their reference counts; only one that later
    became garbage inside a reference cycle would stay (start-up's objects live as long as
    the process). Not for a process that keeps creating apps (the tests): each call collects."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def migrate(settings: Settings) -> str | None:
    """Upgrade the schema to the latest revision; returns the revision the database is at."""
    from app.storage import migrate as migrations

    engine = make_engine(settings)
    try:
        migrations.upgrade(engine)
        return migrations.current_revision(engine)
    finally:
        engine.dispose()


def bootstrap(settings: Settings | None = None, *, run_scheduler: bool | None = None
              ) -> Service:
    """The parts, wired: the scheduler (when ``run_scheduler``, by default
    ``settings.scheduler_enabled``) shares the engine, the profile cache and the counters of
    the process. Nothing starts here: the caller starts the scheduler when it is ready."""
    settings = settings or get_settings()
    if run_scheduler is None:
        run_scheduler = settings.scheduler_enabled
    engine = make_engine(settings)
    partitions = PartitionManager(engine)
    profiles = ProfileCache()
    registry, service_registry = build_registries()
    metrics = ServiceMetrics(service_registry)
    scheduler = (JobScheduler(engine, settings, partitions, hooks=metrics, profiles=profiles)
                 if run_scheduler else None)
    return Service(settings, engine, partitions, profiles, registry, metrics, scheduler)
