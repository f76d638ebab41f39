"""The service metrics of each process (counters and histograms of ingest, HTTP, jobs and the
scheduler; process and platform figures), and the registries /metrics exposes. The
model-quality families read from stored results are observability/quality.py's; what
/metrics exports, all of it, is listed in observability/families.py (docs/prometheus.md), and
the metric objects here are made from its entries.

Each app builds its own registry: tests read a fresh one with get_sample_value().
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)

from app import __version__
from app.evaluation.checks import JOBS
from app.observability.families import SERVICE_FAMILIES, Source

log = logging.getLogger("modelmon.metrics")
# `_created` series double every counter and histogram for no use on the dashboards.
disable_created_metrics()
UNKNOWN = "__unknown__"
UNDECLARED = "__undeclared__"
# the standard process series that, summed over N processes, take the lowest value instead
LIVE_MODES = {"process_max_fds": "livemin", "process_start_time_seconds": "livemin"}
KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


def made(registry: CollectorRegistry, name: str, **kw: Any) -> Any:
    """The metric object of a catalogued per-process family (observability/families.py), so
    its name, help, labels and buckets are the catalogue's."""
    f = SERVICE_FAMILIES[name]
    if f.buckets:
        kw["buckets"] = f.buckets
    return KINDS[f.type](f.name, f.help, f.labels, registry=registry, **kw)


class PredictionsStoredLike(Protocol):
    """What is counted of a stored prediction batch (app/ingest/outcome.py PredictionsStored):
    (model, accepted, duplicates) per model sent, (model, undeclared feature values) and
    (model, version, latency seconds)."""

    sent: Sequence[tuple[str, int, int]]
    undeclared: Sequence[tuple[str, int]]
    latencies: Sequence[tuple[str, str, list[float]]]


class LabelsStoredLike(Protocol):
    """(model, matched, pending, duplicates) per model of a stored label batch."""

    sent: Sequence[tuple[str, int, int, int]]


class RejectedLike(Protocol):
    """A refused batch's records per model (None: not registered) and refused feature values
    per (model, feature) (None: undeclared)."""

    kind: str
    records: Mapping[str | None, int]
    values: Mapping[tuple[str, str | None], int]


class ServiceMetrics:
    """Counters and histograms of this process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.build_info = made(r, "modelmon_build_info", multiprocess_mode="max")
        self.build_info.labels(__version__).set(1)
        self.ingested = made(r, "modelmon_ingested_records_total")
        self.ingested_labels = made(r, "modelmon_ingested_labels_total")
        self.refused_values = made(r, "modelmon_ingest_refused_values_total")
        self.unexpected_features = made(r, "modelmon_ingest_unexpected_features_total")
        self.latency = made(r, "modelmon_inference_latency_seconds")
        self.http = made(r, "modelmon_http_request_duration_seconds")
        self.shed = made(r, "modelmon_http_shed_total")
        self.job_duration = made(r, "modelmon_job_duration_seconds")
        self.job_runs = made(r, "modelmon_job_runs_total")
        self.db_errors = made(r, "modelmon_database_errors_total")
        self.ticks = made(r, "modelmon_scheduler_ticks_total")
        self.tick_duration = made(r, "modelmon_scheduler_tick_duration_seconds")
        self.rolled_up = made(r, "modelmon_rollup_merged_rows_total")
        self.last_tick = made(r, "modelmon_scheduler_last_tick_timestamp_seconds",
                              multiprocess_mode="max")
        self.clock_skew = made(r, "modelmon_clock_skew_seconds",
                               multiprocess_mode="livemostrecent")
        for job in JOBS:  # known label sets exist from the start
            for outcome in ("success", "failure"):
                self.job_runs.labels(job, outcome)
        for outcome in ("success", "failure"):
            self.ticks.labels(outcome)
        for op in ("request", "job"):
            self.db_errors.labels(op)
        for reason in ("idle", "overloaded", "header_timeout", "header_too_large",
                       "ingest_wait"):
            self.shed.labels(reason)

    # ingest: what app/ingest returned, handed over by the HTTP layer ------------------
    def count_predictions(self, stored: PredictionsStoredLike) -> None:
        """A stored prediction batch, counted once it has committed."""
        for name, accepted, duplicates in stored.sent:
            self.ingested.labels(name, "accepted").inc(accepted)
            self.ingested.labels(name, "duplicate").inc(duplicates)
        for name, n in stored.undeclared:
            self.unexpected_features.labels(name).inc(n)
        for name, version, seconds in stored.latencies:
            observe_many(self.latency.labels(name, version), seconds)

    def count_labels(self, stored: LabelsStoredLike) -> None:
        for name, matched, pending, duplicates in stored.sent:
            self.ingested_labels.labels(name, "matched").inc(matched)
            self.ingested_labels.labels(name, "pending").inc(pending)
            self.ingested_labels.labels(name, "duplicate").inc(duplicates)

    def count_rejected(self, rejected: RejectedLike) -> None:
        """A refused batch: its records by model (UNKNOWN for a model not registered), and
        each refused feature value by model and feature (UNDECLARED for a feature the model
        does not declare, so the label stays bounded by the registered schemas)."""
        counter = self.ingested if rejected.kind == "predictions" else self.ingested_labels
        for name, n in rejected.records.items():
            counter.labels(name or UNKNOWN, "rejected").inc(n)
        for (model, feature), n in rejected.values.items():
            self.refused_values.labels(model, feature or UNDECLARED).inc(n)

    # jobs -----------------------------------------------------------------------------
    def job_done(self, job: str, outcome: str, seconds: float) -> None:
        if outcome in ("success", "failure"):
            self.job_runs.labels(job, outcome).inc()
            self.job_duration.labels(job).observe(seconds)

    def clock_seen(self, skew_seconds: float) -> None:
        self.clock_skew.set(skew_seconds)

    def summaries_kept(self, upkeep: dict[str, int]) -> None:
        """What a tick's summary upkeep did (app/jobs/runner.py maintain_summaries)."""
        self.rolled_up.inc(upkeep.get("rolled_up_rows", 0))

    def tick_done(self, outcome: str, seconds: float) -> None:
        self.ticks.labels(outcome).inc()
        self.tick_duration.observe(seconds)
        self.last_tick.set(time.time())


def build_registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """(the registry /metrics exposes, the one the service's counters register in), with the
    process (``process_*``), platform (``python_info``) and garbage collector (``python_gc_*``)
    metrics of the standard collectors.

    Under ``modelmon serve --workers N`` every process writes its counters and histograms to
    PROMETHEUS_MULTIPROC_DIR and /metrics, whichever process answers, adds up all of them; the
    model-quality gauges come from the database and are the same from every process. The
    standard process collector would report only the answering process there, so each process
    copies its own figures into shared series instead (ProcessMetrics)."""
    exposed = CollectorRegistry()
    exposed.register(PLATFORM_COLLECTOR)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        exposed.register(PROCESS_COLLECTOR)
        exposed.register(GC_COLLECTOR)
        return exposed, exposed
    multiprocess.MultiProcessCollector(exposed)
    service = CollectorRegistry()
    ProcessMetrics(service).start()
    return exposed, service


class ProcessMetrics:
    """The standard ``process_*`` series for N processes behind one port: memory and open
    file descriptors summed over the live processes, CPU seconds summed over all of them, the
    start time of the oldest live one. Each process copies its own figures every
    ``interval`` seconds (and removes the shared files of processes that have exited)."""

    def __init__(self, registry: CollectorRegistry, interval: float = 5.0) -> None:
        self.gauges = {
            name: made(registry, name, multiprocess_mode=LIVE_MODES.get(name, "livesum"))
            for name, f in SERVICE_FAMILIES.items()
            if f.source is Source.RUNTIME and name.startswith("process_") and f.type == "gauge"}
        self.cpu = made(registry, "process_cpu_seconds_total")
        self._cpu_seen = 0.0
        self._interval = interval

    def update(self) -> None:
        for family in PROCESS_COLLECTOR.collect():
            value = family.samples[0].value
            if family.name == "process_cpu_seconds":
                self.cpu.inc(max(value - self._cpu_seen, 0.0))
                self._cpu_seen = max(value, self._cpu_seen)
            elif family.name in self.gauges:
                self.gauges[family.name].set(value)
        _forget_exited_processes()

    def start(self) -> None:
        self.update()

        def loop() -> None:
            while True:
                time.sleep(self._interval)
                try:
                    self.update()
                except Exception as exc:  # noqa: BLE001 - never take the process down
                    log.warning("process metrics not updated: %s", type(exc).__name__)

        threading.Thread(target=loop, name="modelmon-process-metrics", daemon=True).start()


def _forget_exited_processes() -> None:
    """Drop the live-gauge files of processes that no longer exist, so a restarted worker's
    memory is not counted twice."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    pids = set()
    for f in os.listdir(path):
        if f.startswith("gauge_live") and f.endswith(".db"):
            pid = f.rsplit("_", 1)[-1].removesuffix(".db")
            if pid.isdigit():
                pids.add(int(pid))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, another user's


def observe_many(child: Any, values: list[float]) -> None:
    """Histogram.observe for each value, in one step per bucket instead of one per value
    (the library observes one value at a time; a 1,000-record batch would take 1,000 locked
    increments of the sum and as many of a bucket, in mmap files in multiprocess mode).
    Buckets hold non-cumulative counts: a value goes to the first bound it is <= to."""
    x = np.asarray(values, dtype=np.float64)
    counts = np.bincount(np.searchsorted(np.asarray(child._upper_bounds), x, side="left"),
                         minlength=len(child._upper_bounds))
    child._sum.inc(float(x.sum()))
    for bucket, n in zip(child._buckets, counts.tolist(), strict=True):
        if n:
            bucket.inc(n)
