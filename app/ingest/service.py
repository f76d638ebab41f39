"""Ingest orchestration: limits, schema lookup (one query per table), validation, one
transaction. Called by the API in a worker thread; no HTTP here."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg.errors import CheckViolation, UniqueViolation
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from app.errors import ApiError, Problem
from app.evaluation.profiles import ProfileCache
from app.evaluation.summaries import ModelShape
from app.ingest import decode, slo, summarize
from app.ingest import validation as v
from app.ingest.writer import (
    KEY_CONSTRAINT,
    LabelResult,
    StoredLabel,
    WriteResult,
    write_labels,
    write_predictions,
)
from app.jsonvalues import parse_json
from app.settings import Settings
from app.storage import pending, registry
from app.storage import summaries as summary_store
from app.storage.partitions import PartitionManager

if TYPE_CHECKING:
    from app.evaluation.summaries import CompiledProfile
    from app.observability.metrics import ServiceMetrics, StoredTally


def _limits(settings: Settings) -> v.Limits:
    return v.Limits(
        now=datetime.now(UTC),
        max_future=timedelta(seconds=settings.max_future_seconds),
        # Nothing older than the retention: it would be deleted at once, and its day's
        # partition may already be gone.
        max_past=timedelta(days=min(settings.max_past_days, settings.retention_days)),
        sum_tolerance=settings.multiclass_sum_tolerance,
        unknown_features=settings.unknown_features,
    )


def _schemas(engine: Engine, records: list[Any]) -> dict[str, v.ModelSchema]:
    return _schemas_named(engine, v.referenced_models(records))


def _schemas_named(engine: Engine, names: set[str]) -> dict[str, v.ModelSchema]:
    with engine.connect() as conn:
        rows = registry.get_models(conn=conn, names=names)
        ids = {m.id for m in rows.values()}
        versions = registry.version_ids(conn=conn, model_ids=ids)
        own = registry.version_features(conn=conn, model_ids=ids)
    by_model: dict[int, dict[str, int]] = {}
    for (model_id, version), vid in versions.items():
        by_model.setdefault(model_id, {})[version] = vid
    return {name: v.ModelSchema.build(row, by_model.get(row.id, {}),
                                      {vid: own[vid] for vid in by_model.get(row.id, {}).values()
                                       if vid in own})
            for name, row in rows.items()}


def _validated(engine: Engine, settings: Settings, body: Any, kind: str,
               metrics: ServiceMetrics | None,
               authorize: Callable[[list[Any]], None] | None
               ) -> tuple[list[Any], dict[str, v.ModelSchema], list[tuple], int]:
    """Records, their models' schemas, the rows to store and in-batch repeats; a refused
    batch is counted as rejected before the error propagates. The caller's right to the
    batch's models is checked before anything else is said about them."""
    records = v.records_of(body, settings.max_batch_records)
    if authorize is not None:
        authorize([r.get("model") if isinstance(r, dict) else None for r in records])
    schemas = _schemas(engine, records)
    predictions = kind == "records"
    try:
        v.check_known(records, schemas, with_version=predictions)
        validate = v.validate_predictions if predictions else v.validate_labels
        rows, repeats = validate(records, schemas, _limits(settings))
    except ApiError as exc:
        if metrics is not None:
            metrics.rejected(records, kind, schemas, exc.details)
        raise
    return records, schemas, rows, repeats


class Ahead:
    """A computation that needs no database, begun on another thread by ``start`` (while
    PostgreSQL inserts a batch's rows) and taken by ``result``. If no thread of the pool
    has taken it up by then, it runs in the caller's thread: a busy pool delays nothing.
    ``result`` without ``start`` computes in the caller's thread."""

    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()
    THREADS = 4

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._future: Future[Any] | None = None

    @classmethod
    def _executor(cls) -> ThreadPoolExecutor:
        with cls._pool_lock:  # made at first use: never inherited across a fork
            if cls._pool is None:
                cls._pool = ThreadPoolExecutor(cls.THREADS, thread_name_prefix="modelmon-ahead")
            return cls._pool

    def start(self) -> None:
        self._future = self._executor().submit(self._fn)

    def result(self) -> Any:
        if self._future is None or self._future.cancel():  # cancelled: not begun yet
            return self._fn()
        return self._future.result()


def _append_summaries(conn: Any, rows_by_model: dict[int, list[Any]]) -> None:
    for model_id, rows in sorted(rows_by_model.items()):
        summary_store.append(conn=conn, model_id=model_id, rows=rows)


_DECODERS: dict[Any, decode.ModelDecoders] = {}
# How long the ingest path trusts what it read of a version's profile and a model's schema.
PROFILE_RECHECK_SECONDS = 5.0
SCHEMA_RECHECK_SECONDS = 5.0


class SchemaCache:
    """Models' schemas for the ingest path, read again after SCHEMA_RECHECK_SECONDS or as
    soon as a batch names a model or version not seen yet (a version registered a moment ago
    is found at once)."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[float, v.ModelSchema]] = {}
        self._lock = threading.Lock()

    def forget(self, name: str) -> None:
        """Drop what is held of a model (it was deleted, or a version of it was): this process
        reads it again at its next batch; other processes within SCHEMA_RECHECK_SECONDS."""
        with self._lock:
            self._by_name.pop(name, None)

    def get(self, engine: Engine, wanted: set[tuple[str, str | None]]
            ) -> dict[str, v.ModelSchema]:
        now = time.monotonic()
        out: dict[str, v.ModelSchema] = {}
        stale: set[str] = set()
        with self._lock:
            for name, version in wanted:
                hit = self._by_name.get(name)
                if hit is None or now - hit[0] > SCHEMA_RECHECK_SECONDS or (
                        version is not None and version not in hit[1].versions):
                    stale.add(name)
                else:
                    out[name] = hit[1]
        if stale:
            fresh = _schemas_named(engine, stale)
            with self._lock:
                if len(self._by_name) > 10_000:
                    self._by_name.clear()
                for name, schema in fresh.items():
                    self._by_name[name] = (now, schema)
            out.update(fresh)
        return out


def ingest_predictions(*, engine: Engine, partitions: PartitionManager, settings: Settings,
                       body: bytes | Any, metrics: ServiceMetrics | None = None,
                       profiles: ProfileCache | None = None,
                       schema_cache: SchemaCache | None = None,
                       authorize: Callable[[list[str]], None] | None = None) -> WriteResult:
    """Store a batch. ``body`` is the request's bytes (the typed fast path decodes them, and
    steps aside for the complete validator on anything it does not accept) or parsed JSON."""
    try:
        if not isinstance(body, (bytes, bytearray)):
            raise decode.NotFast
        cache = schema_cache or SchemaCache()
        batch = decode.decode_predictions(
            bytes(body), lambda wanted: cache.get(engine, wanted), _limits(settings),
            settings.max_batch_records, _DECODERS)
    except decode.NotFast:
        parsed = parse_json(body) if isinstance(body, (bytes, bytearray)) else body
        records, schemas, rows, repeats = _validated(engine, settings, parsed, "records",
                                                     metrics, authorize)
        names = [r["model"] for r in records]
        by_id = {s.row.id: s for s in schemas.values()}
        shapes = {i: ModelShape.of(s.summary_row) for i, s in by_id.items()}
        columns = functools.cache(lambda: summarize.columns_of_rows(shapes, rows))
    else:
        if authorize is not None:  # the fast path accepted: the names are the batch's models
            authorize(batch.names)
        names, rows, repeats = batch.names, batch.rows, batch.repeats
        columns = lambda: batch.columns  # noqa: E731 - built at first use, then kept
        by_id = {s.row.id: s for s in batch.schemas.values()}
        shapes = {i: ModelShape.of(s.summary_row) for i, s in by_id.items()}
    days = {r[1].date() for r in rows}  # UTC days, as partitioned (rows' times are UTC)

    def after_write(duplicates: set[tuple[int, str]],
                    waiting: dict[tuple[int, str], StoredLabel],
                    new_rows: list[tuple], compiled: dict[int, CompiledProfile]
                    ) -> tuple[dict[int, list[Any]], StoredTally | None]:
        """What the batch adds to its summaries, and what to count of it once committed:
        Python work that needs no database."""
        return (summarize.for_predictions(shapes, rows, columns(), duplicates, waiting,
                                          compiled, settings.job_interval_seconds),
                None if metrics is None else metrics.stored_tally(by_id, names, new_rows))

    # First as if every key were new (the common case, and the cheaper claim); a key stored
    # already fails that attempt, and the batch is stored again claiming with ON CONFLICT.
    assume_new, partition_retry = True, True
    while True:
        # DDL for any new day runs in its own short transaction, before the data transaction.
        partitions.ensure_days(days)
        try:
            with engine.begin() as conn:
                compiled = (profiles or ProfileCache()).recent(
                    conn, {r[3] for r in rows}, PROFILE_RECHECK_SECONDS)
                # If the rows are copied in as they are (no duplicate, no waiting label),
                # this runs on another thread while PostgreSQL inserts them.
                ahead = Ahead(lambda compiled=compiled: after_write(set(), {}, rows, compiled))
                result = write_predictions(conn, rows, assume_new=assume_new,
                                           while_copying=ahead.start)
                if result.waiting_labels:  # labels that waited for these predictions
                    pending.add(conn, {m: -n for m, n in Counter(
                        m for m, _ in result.waiting_labels).items()})
                slo.add(conn, by_id, slo.pairs_for_new_predictions(result.new_rows,
                                                                    result.waiting_labels))
                if result.duplicate_keys or result.waiting_labels:
                    ahead = Ahead(lambda compiled=compiled, result=result: after_write(
                        result.duplicate_keys, result.waiting_labels, result.new_rows,
                        compiled))
                summaries, tally = ahead.result()
                _append_summaries(conn, summaries)
            break
        except IntegrityError as exc:
            if assume_new and isinstance(exc.orig, UniqueViolation) and \
                    exc.orig.diag.constraint_name == KEY_CONSTRAINT:
                assume_new = False
                continue
            # Another replica's retention dropped a partition this process remembered.
            if not (partition_retry and isinstance(exc.orig, CheckViolation)):
                raise
            partition_retry = False
            partitions.forget()
    if metrics is not None:
        metrics.count_stored(tally)
    return WriteResult(result.accepted, result.duplicates + repeats, result.new_rows,
                       result.waiting_labels, result.duplicate_keys)


def ingest_labels(*, engine: Engine, settings: Settings, body: Any,
                  metrics: ServiceMetrics | None = None,
                  authorize: Callable[[list[str]], None] | None = None) -> LabelResult:
    records, schemas, rows, repeats = _validated(engine, settings, body, "labels", metrics,
                                                 authorize)
    by_id = {s.row.id: s for s in schemas.values()}
    shapes = {i: ModelShape.of(s.summary_row) for i, s in by_id.items()}
    with engine.begin() as conn:
        result = write_labels(conn, rows, repeats)
        try:
            _count_waiting(conn, settings, records, by_id, result)
        except ApiError:
            if metrics is not None:
                metrics.rejected(records, "labels", schemas)
            raise
        slo.add(conn, by_id, slo.pairs_for_new_labels(result.pairs))
        _append_summaries(conn, summarize.for_pairs(shapes, result.pairs,
                                                    settings.job_interval_seconds))
    if metrics is not None:
        metrics.stored_labels(by_id, records, result)
    return result


def _count_waiting(conn: Any, settings: Settings, records: list[Any],
                   by_id: dict[int, v.ModelSchema], result: LabelResult) -> None:
    """Add the batch's labels that wait for their prediction to their models' counts; a
    model past MODELMON_MAX_PENDING_LABELS refuses the batch (422, each waiting label named;
    the transaction rolls back, so nothing is stored)."""
    matched = result.matched_keys
    waiting = [(m, p) for m, p, _ in result.new_labels if (m, p) not in matched]
    if not waiting:
        return
    totals = pending.add(conn, dict(Counter(m for m, _ in waiting)))
    over = {m for m, n in totals.items() if n > settings.max_pending_labels}
    if not over:
        return
    ids = {s.row.name: i for i, s in by_id.items()}
    index: dict[tuple[int, str], int] = {}
    for i, r in enumerate(records):
        index.setdefault((ids[r["model"]], r["prediction_id"]), i)
    names = ", ".join(sorted(by_id[m].row.name for m in over))
    raise ApiError(
        422, "too_many_pending_labels",
        f"model(s) {names} would hold more than {settings.max_pending_labels} labels waiting "
        "for their predictions; nothing was stored. Send the predictions first, or resend "
        "without the labels listed in details.",
        [Problem("no prediction stored for this label, and its model's labels waiting for "
                 "predictions are at their limit", field="prediction_id", index=index[k])
         for k in waiting if k[0] in over])
