"""Ingest orchestration: limits, schema lookup (one query per table), validation, one
transaction. Called by the API in a worker thread; no HTTP here. Each call returns what it
stored (outcome.py) or raises outcome.Refused; the caller counts either."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg.errors import CheckViolation, UniqueViolation
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from app.errors import DomainError, Invalid, Problem
from app.evaluation.profiles import ProfileCache
from app.evaluation.summaries import ModelShape
from app.ingest import decode, slo, summarize, thin
from app.ingest import validation as v
from app.ingest.outcome import (
    LabelsStored,
    PredictionsStored,
    Refused,
    labels_stored,
    predictions_stored,
    rejected,
)
from app.ingest.rows import PredictionRow, StoredLabel
from app.ingest.summarize import ModelColumns
from app.ingest.writer import KEY_CONSTRAINT, LabelResult, write_labels, write_predictions
from app.jsonvalues import parse_json
from app.settings import Settings
from app.storage import pending, registry
from app.storage import summaries as summary_store
from app.storage.partitions import PartitionManager

if TYPE_CHECKING:
    from app.evaluation.summaries import CompiledProfile


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
               authorize: Callable[[list[Any]], None] | None,
               schema_cache: SchemaCache | None = None
               ) -> tuple[list[Any], dict[str, v.ModelSchema], Any]:
    """Records, their models' schemas and what the validator made of them; a refused batch
    raises Refused. The caller's right to the batch's models is checked before anything else
    is said about them."""
    predictions = kind == "predictions"
    records = v.records_of(body, settings.max_batch_records,
                           frozenset({thin.MARK}) if predictions else frozenset())
    summarized = predictions and thin.marked(body)
    if authorize is not None:
        authorize([r.get("model") if isinstance(r, dict) else None for r in records])
    schemas = (_schemas(engine, records) if schema_cache is None else schema_cache.get(
        engine, {(name, None) for name in v.referenced_models(records)}))
    try:
        v.check_known(records, schemas, with_version=predictions)
        if predictions:
            return records, schemas, v.validate_predictions(records, schemas, _limits(settings),
                                                            summarized)
        return records, schemas, v.validate_labels(records, schemas, _limits(settings))
    except DomainError as exc:
        raise Refused(exc, rejected(records, kind, schemas, exc.details)) from None


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
# The smallest batch whose summaries are computed on another thread while PostgreSQL inserts
# its rows (see _store).
AHEAD_MIN_ROWS = 500
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


WARM_VERSIONS = 50  # versions a new process reads ahead, the most recently active first
WARM_SECONDS = 10.0  # and for how long at most


def warm(engine: Engine, schema_cache: SchemaCache, profiles: ProfileCache, *,
         since: datetime) -> int:
    """Read ahead the schemas and compiled reference profiles of the versions that had
    predictions since ``since``, so that a new process's first batches do not each read and
    compile them: a 20-feature profile takes about 200 ms to read and compile, and a process
    that starts under traffic (a restart, a rolling upgrade) took every batch of its first
    seconds through that, queueing the rest (BENCHMARKS.md, "Ingest slots"). Returns the
    versions whose profiles were read ahead."""
    deadline = time.monotonic() + WARM_SECONDS
    with engine.connect() as conn:
        recent = summary_store.recent_versions(conn=conn, since=since, limit=WARM_VERSIONS)
    if not recent:
        return 0
    schema_cache.get(engine, {(name, None) for name, _ in recent})
    done = 0
    with engine.connect() as conn:
        for _, version_id in recent:
            if time.monotonic() > deadline:
                break
            profiles.get(conn, [version_id])
            done += 1
    return done


@dataclass(frozen=True)
class _Batch:
    """A prediction batch accepted by either validator, ready to store."""

    names: list[str]  # each record's model
    rows: list[PredictionRow]
    by_id: dict[int, v.ModelSchema]
    columns: Callable[[], dict[int, ModelColumns]]  # built at first use, then kept
    undeclared: dict[tuple[int, str], int]  # per key, when the record carried any
    summarized: bool = False  # thin rows (app/ingest/thin.py): stored for pairing only

    @functools.cached_property
    def shapes(self) -> dict[int, ModelShape]:
        return {i: ModelShape.of(s.summary_row) for i, s in self.by_id.items()}

    def after_write(self, duplicates: set[tuple[int, str]],
                    waiting: dict[tuple[int, str], StoredLabel],
                    new_rows: list[PredictionRow], compiled: dict[int, CompiledProfile],
                    bucket_seconds: float) -> tuple[dict[int, list[Any]], PredictionsStored]:
        """What the batch adds to its summaries, and its outcome: Python work that needs no
        database."""
        summaries = summarize.for_predictions(self.shapes, self.rows, self.columns(), duplicates,
                                              waiting, compiled, bucket_seconds,
                                              thin=self.summarized)
        stored = predictions_stored(self.by_id, self.names, new_rows, self.undeclared)
        if self.summarized:  # counted by the producer's summaries, not here
            stored = replace(stored, sent=[], undeclared=[], latencies=[])
        return summaries, stored


def _decoded(engine: Engine, settings: Settings, body: bytes | Any,
             schema_cache: SchemaCache | None,
             authorize: Callable[[list[str]], None] | None) -> _Batch:
    """The batch, by the typed fast path, or by the complete validator where the fast path
    steps aside (or ``body`` is parsed JSON already)."""
    try:
        if not isinstance(body, (bytes, bytearray)):
            raise decode.NotFast
        cache = schema_cache or SchemaCache()
        batch = decode.decode_predictions(
            bytes(body), lambda wanted: cache.get(engine, wanted), _limits(settings),
            settings.max_batch_records, _DECODERS)
    except decode.NotFast:
        parsed = parse_json(body) if isinstance(body, (bytes, bytearray)) else body
        records, schemas, valid = _validated(engine, settings, parsed, "predictions",
                                             authorize)
        by_id = {s.row.id: s for s in schemas.values()}
        shapes = {i: ModelShape.of(s.summary_row) for i, s in by_id.items()}
        return _Batch([r["model"] for r in records], valid.rows, by_id,
                      functools.cache(lambda: summarize.columns_of_rows(shapes, valid.rows,
                                                                        valid.parsed)),
                      {r.key: p.undeclared for r, p in zip(valid.rows, valid.parsed,
                                                           strict=True) if p.undeclared},
                      thin.marked(parsed))
    if authorize is not None:  # the fast path accepted: the names are the batch's models
        authorize(batch.names)
    return _Batch(batch.names, batch.rows, {s.row.id: s for s in batch.schemas.values()},
                  lambda: batch.columns, {})


def ingest_predictions(*, engine: Engine, partitions: PartitionManager, settings: Settings,
                       body: bytes | Any, profiles: ProfileCache | None = None,
                       schema_cache: SchemaCache | None = None,
                       authorize: Callable[[list[str]], None] | None = None
                       ) -> PredictionsStored:
    """Store a batch. ``body`` is the request's bytes (the typed fast path decodes them, and
    steps aside for the complete validator on anything it does not accept) or parsed JSON."""
    batch = _decoded(engine, settings, body, schema_cache, authorize)
    days = {r.ts.date() for r in batch.rows}  # UTC days, as partitioned (rows' times are UTC)
    bucket = settings.job_interval_seconds
    # First as if every key were new (the common case, and the cheaper claim); a key stored
    # already fails that attempt, and the batch is stored again claiming with ON CONFLICT.
    assume_new, partition_retry = True, True
    while True:
        # DDL for any new day runs in its own short transaction, before the data transaction.
        partitions.ensure_days(days)
        try:
            with engine.begin() as conn:
                return _store(conn, batch, profiles or ProfileCache(), assume_new, bucket)
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


def _store(conn: Any, batch: _Batch, profiles: ProfileCache, assume_new: bool,
           bucket: float) -> PredictionsStored:
    """One attempt at storing the batch, in the caller's transaction."""
    rows = batch.rows
    compiled = profiles.recent(conn, {r.version_id for r in rows}, PROFILE_RECHECK_SECONDS)
    # If the rows are copied in as they are (no duplicate, no waiting label), a large batch's
    # summaries are computed on another thread while PostgreSQL inserts them; a small one's
    # cost less than the hand-over between threads, so they are computed here.
    ahead = Ahead(lambda: batch.after_write(set(), {}, rows, compiled, bucket))
    result = write_predictions(conn, rows, assume_new=assume_new,
                               while_copying=ahead.start if len(rows) >= AHEAD_MIN_ROWS
                               else None)
    if result.waiting_labels:  # labels that waited for these predictions
        pending.add(conn, {m: -n for m, n in Counter(
            m for m, _ in result.waiting_labels).items()})
    slo.add(conn, batch.by_id, slo.pairs_for_new_predictions(result.new_rows,
                                                             result.waiting_labels))
    if result.duplicate_keys or result.waiting_labels:
        ahead = Ahead(lambda: batch.after_write(result.duplicate_keys, result.waiting_labels,
                                                result.new_rows, compiled, bucket))
    summaries, outcome = ahead.result()
    _append_summaries(conn, summaries)
    return outcome


def _labels_decoded(engine: Engine, settings: Settings, body: bytes | Any,
                    authorize: Callable[[list[str]], None] | None,
                    schema_cache: SchemaCache | None
                    ) -> tuple[list[Any], dict[str, v.ModelSchema], list[Any], int]:
    """(records, schemas, rows, repeats): by the typed fast path, or by the complete
    validator where it steps aside (or ``body`` is parsed JSON already). ``records`` are
    what the refusal and outcome counts read: the batch's model names as records."""
    if isinstance(body, (bytes, bytearray)):
        cache = schema_cache or SchemaCache()
        try:
            fast = decode.decode_labels(bytes(body), lambda wanted: cache.get(engine, wanted),
                                        _limits(settings), settings.max_batch_records)
        except decode.NotFast:
            body = parse_json(body)
        else:
            if authorize is not None:
                authorize(fast.names)
            return ([{"model": n, "prediction_id": i}
                     for n, i in zip(fast.names, fast.ids, strict=True)],
                    fast.schemas, fast.rows, fast.repeats)
    records, schemas, (rows, repeats) = _validated(engine, settings, body, "labels",
                                                   authorize, schema_cache)
    return records, schemas, rows, repeats


def ingest_labels(*, engine: Engine, settings: Settings, body: bytes | Any,
                  authorize: Callable[[list[str]], None] | None = None,
                  schema_cache: SchemaCache | None = None) -> LabelsStored:
    records, schemas, rows, repeats = _labels_decoded(engine, settings, body, authorize,
                                                      schema_cache)
    by_id = {s.row.id: s for s in schemas.values()}
    shapes = {i: ModelShape.of(s.summary_row) for i, s in by_id.items()}
    with engine.begin() as conn:
        result = write_labels(conn, rows, repeats, striped=settings.pairing_locks == "striped")
        # The per-model counter rows last: their row locks, held to the commit, are what a
        # model's label batches still wait on one another for.
        _append_summaries(conn, summarize.for_pairs(shapes, result.pairs,
                                                    settings.job_interval_seconds))
        try:
            _count_waiting(conn, settings, records, by_id, result)
        except DomainError as exc:
            raise Refused(exc, rejected(records, "labels", schemas)) from None
        slo.add(conn, by_id, slo.pairs_for_new_labels(result.pairs))
    return labels_stored(by_id, records, result)


def _count_waiting(conn: Any, settings: Settings, records: list[Any],
                   by_id: dict[int, v.ModelSchema], result: LabelResult) -> None:
    """Add the batch's labels that wait for their prediction to their models' counts; a
    model past MODELMON_MAX_PENDING_LABELS refuses the batch (Invalid, each waiting label named;
    the transaction rolls back, so nothing is stored)."""
    matched = result.matched_keys
    waiting = [k for k in ((r.model_id, r.prediction_id) for r in result.new_labels)
               if k not in matched]
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
    raise Invalid(
        "too_many_pending_labels",
        f"model(s) {names} would hold more than {settings.max_pending_labels} labels waiting "
        "for their predictions; nothing was stored. Send the predictions first, or resend "
        "without the labels listed in details.",
        [Problem("no prediction stored for this label, and its model's labels waiting for "
                 "predictions are at their limit", field="prediction_id", index=index[k])
         for k in waiting if k[0] in over])
