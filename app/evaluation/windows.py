"""Windows: clock-aligned bounds, and the merge of a window's bucket summaries.

A window [start, end) is evaluated over the buckets that start inside it; jobs' windows are
whole buckets by construction. A report's bounds are widened to whole buckets (start down,
end up), and the response gives the bounds actually used.

Drift summaries belong to one reference profile. A bucket whose drift rows do not cover all
its predictions under the current profile (a reference uploaded after traffic began, a
baseline fixed later, rows ingested by a replica that had not seen the new profile yet) is
summarised again from its stored rows: by the scheduler, which stores the result (each row
read once per profile), or on the fly by a report, which does not.

Old buckets are rolled up into hours and days (app/evaluation/rollup.py): a row then covers
``span`` seconds. Coverage is judged per cell, the widest rolled-up span holding a bucket (or
the bucket itself), since late rows of one job interval may sit inside a rolled-up span until
the next roll-up merges them.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine

from app.evaluation.counting import drift_summaries
from app.evaluation.fold import merged_payload
from app.evaluation.packing import (
    add_drift_into,
    pack_drift,
    pack_outcome,
    unpack_outcome,
)
from app.evaluation.summaries import (
    CompiledProfile,
    DriftSummary,
    ModelShape,
    OutcomeSummary,
    Rows,
    outcome_summary,
    rows_from_records,
)
from app.storage import locks, registry
from app.storage import observations as obs
from app.storage import summaries as store
from app.storage.summaries import DRIFT, OUTCOME, SummaryRow

log = logging.getLogger("modelmon.summaries")
HOUR, DAY = 3600, 86_400  # the spans buckets are rolled up into (app/evaluation/rollup.py)


def aligned_end(now: datetime, interval_seconds: float) -> datetime:
    """The most recent window boundary: every replica computes the same one."""
    ts = math.floor(now.timestamp() / interval_seconds) * interval_seconds
    return datetime.fromtimestamp(ts, UTC)


def whole_buckets(start: datetime, end: datetime,
                  bucket_seconds: float) -> tuple[datetime, datetime]:
    """[start, end) widened to bucket boundaries."""
    lo = math.floor(start.timestamp() / bucket_seconds) * bucket_seconds
    hi = math.ceil(end.timestamp() / bucket_seconds) * bucket_seconds
    return datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)


Cell = tuple[datetime, int]  # (start, span in seconds; 0: one job interval)


def floor_to(ts: datetime, seconds: float) -> datetime:
    return datetime.fromtimestamp(math.floor(ts.timestamp() / seconds) * seconds, UTC)


def cells_of(keys: Iterable[Cell]) -> dict[Cell, Cell]:
    """Each (bucket_start, span) mapped to the widest rolled-up span among ``keys`` that
    holds it, or to itself. Rolled-up spans are aligned hours and days: two of them are
    nested or apart."""
    keys = set(keys)
    starts: dict[int, set[datetime]] = defaultdict(set)
    for b, s in keys:
        if s:
            starts[s].add(b)
    spans = sorted(starts, reverse=True)
    out = {}
    for b, s in keys:
        out[(b, s)] = next(((floor_to(b, w), w) for w in spans
                            if w >= s and floor_to(b, w) in starts[w]), (b, s))
    return out


def cell_end(cell: Cell, bucket_seconds: float) -> datetime:
    return cell[0] + timedelta(seconds=cell[1] or bucket_seconds)


@dataclass
class MergedWindow:
    """The sums of one version's buckets in [start, end)."""

    version_id: int
    start: datetime
    end: datetime
    outcome: OutcomeSummary
    drift: DriftSummary | None = None
    buckets: int = 0
    # buckets whose drift was summarised again from stored rows for this window
    resummarised_buckets: int = 0
    resummarised_rows: int = 0
    stale: list[Cell] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.outcome.n

    def summary_info(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "resummarised_buckets": self.resummarised_buckets,
                "resummarised_rows": self.resummarised_rows}


def rows_from_db(shape: ModelShape, db_rows: list[Any]) -> Rows:
    def epoch(ts: datetime | None) -> float | None:
        return None if ts is None else (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
    return rows_from_records(
        shape, [r.version_id for r in db_rows], [epoch(r.ts) for r in db_rows],
        [r.features or {} for r in db_rows], [r.cohorts or {} for r in db_rows],
        [r.score for r in db_rows], [r.value for r in db_rows],
        [r.probabilities for r in db_rows], [r.label_class for r in db_rows],
        [r.label_value for r in db_rows], [epoch(r.label_ts) for r in db_rows])


def stale_buckets(covered: list[tuple[datetime, int, str, str, int]], key: str
                  ) -> list[Cell]:
    """Cells (see cells_of) whose drift rows on profile ``key`` do not cover all their
    predictions, from (bucket_start, span, kind, profile_key, n) of the service's rows."""
    cell = cells_of((b, s) for b, s, *_ in covered)
    counted: dict[Cell, int] = defaultdict(int)
    on_key: dict[Cell, int] = defaultdict(int)
    for bucket, span, kind, profile, n in covered:
        if kind == OUTCOME:
            counted[cell[(bucket, span)]] += n
        elif profile == key:
            on_key[cell[(bucket, span)]] += n
    return sorted(c for c, n in counted.items() if n and on_key.get(c, 0) != n)


def _read(rows: list[SummaryRow], window: MergedWindow, cp: CompiledProfile | None) -> None:
    """Add the rows into ``window``; note cells whose drift does not cover them."""
    own = [(r.bucket_start, r.span, r.kind, r.profile_key, r.n) for r in rows if not r.origin]
    window.stale = [] if cp is None else stale_buckets(own, cp.key)
    cell = cells_of((b, s) for b, s, *_ in own)
    stale = set(window.stale)
    buckets = set()
    if cp is not None:
        window.drift = DriftSummary.empty(cp)
    for r in rows:
        if r.kind == OUTCOME:
            window.outcome.add(unpack_outcome(r.payload))
            if r.n:
                buckets.add(r.bucket_start)
        elif cp is not None and r.profile_key == cp.key and (
                r.origin or cell[(r.bucket_start, r.span)] not in stale):  # imports stay
            add_drift_into(window.drift, r.payload)
    window.buckets = len(buckets)


def summarise_bucket_drift(conn: Connection, shape: ModelShape, cp: CompiledProfile,
                           model_id: int, version_id: int, bucket: datetime,
                           bucket_seconds: float, span: int = 0) -> DriftSummary:
    """The drift summary of a bucket, or of the ``span`` seconds of a rolled-up cell, from
    its stored rows, read one bucket at a time (a day at 1,000 predictions/s is 86M rows)."""
    step = timedelta(seconds=bucket_seconds)
    total = DriftSummary.empty(cp)
    at, end = bucket, bucket + timedelta(seconds=span or bucket_seconds)
    while at < end:
        rows = rows_from_db(shape, obs.load_rows(conn=conn, model_id=model_id,
                                                 version_id=version_id, start=at,
                                                 end=at + step))
        total.add(drift_summaries(shape, cp, rows, np.zeros(rows.n, dtype=np.int64), 1)[0])
        at += step
    return total


def merge(conn: Connection, model: Any, version_id: int, start: datetime, end: datetime, *,
          bucket_seconds: float, cp: CompiledProfile | None,
          max_cohort_values: int) -> MergedWindow:
    """The window's sums. With a profile, drift of buckets it does not cover is summarised
    from their stored rows (bounded: those buckets' rows, once). At most
    ``max_cohort_values`` cohorts per key are kept, the smallest folded, so neither a job's
    rows nor a report grow with the number of distinct values clients send."""
    w = MergedWindow(version_id, start, end, OutcomeSummary())
    _read(store.window_rows(conn=conn, model_id=model.id, version_id=version_id,
                            start=start, end=end), w, cp)
    w.outcome.cap_cohorts(max_cohort_values)
    if cp is not None and w.stale:
        shape = ModelShape.of(registry.version_model(conn=conn, model=model,
                                                     version_id=version_id))
        for c in w.stale:
            d = summarise_bucket_drift(conn, shape, cp, model.id, version_id, c[0],
                                       bucket_seconds, c[1])
            w.drift.add(d)
            w.resummarised_buckets += 1
            w.resummarised_rows += d.n
    return w


def repeatable_read(conn: Connection) -> Connection:
    """One snapshot for every statement of the transaction (Postgres), so that summary rows
    and the stored rows they summarise are read as of the same moment."""
    if conn.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


# --------------------------------------------------------------------------- maintenance


def compact(engine: Engine, before: datetime, max_cohort_values: int) -> int:
    """Merge each closed bucket's rows into one per kind and profile (at most
    ``max_cohort_values`` cohorts per key, the rest folded)."""
    done = 0
    with engine.connect() as c:
        groups = store.fragmented(conn=c, before=before)
    for model_id, version_id, bucket, kind, key, origin, span in groups:
        with engine.begin() as conn:
            taken = store.take(conn=conn, model_id=model_id, version_id=version_id,
                               bucket_start=bucket, kind=kind, profile_key=key,
                               origin=origin, span=span)
            if not taken:
                continue
            n = sum(t[1] for t in taken)
            payload = merged_payload(kind, key, (t[2] for t in taken),
                                     max_cohort_values if kind == OUTCOME else None)
            store.append(conn=conn, model_id=model_id, rows=[
                SummaryRow(version_id, bucket, kind, key, n, payload, origin, span)])
            done += 1
    return done


def resummarise(engine: Engine, model: Any, version_id: int, start: datetime, end: datetime,
                cp: CompiledProfile, bucket_seconds: float) -> int:
    """Store drift summaries on ``cp`` for the buckets of [start, end) it does not cover.
    Returns the number of rows read."""
    rows_read = 0
    with repeatable_read(engine.connect()) as conn, conn.begin():
        shape = ModelShape.of(registry.version_model(conn=conn, model=model,
                                                     version_id=version_id))
        locks.hold(conn, locks.SUMMARY_UPKEEP, model.id)
        stale = stale_buckets(store.coverage(conn=conn, model_id=model.id,
                                             version_id=version_id, start=start, end=end),
                              cp.key)
        for c in stale:  # every drift row of the cell goes; one row on cp covers it
            store.take_span(conn=conn, model_id=model.id, version_id=version_id, start=c[0],
                            end=cell_end(c, bucket_seconds), kind=DRIFT, profile_key=None,
                            origin="", max_span=c[1])
            d = summarise_bucket_drift(conn, shape, cp, model.id, version_id, c[0],
                                       bucket_seconds, c[1])
            store.append(conn=conn, model_id=model.id, rows=[
                SummaryRow(version_id, c[0], DRIFT, cp.key, d.n, pack_drift(d), "", c[1])])
            rows_read += d.n
    if rows_read:
        log.info("drift summaries of model %s version %s rebuilt on profile %s: %d rows",
                 model.name, version_id, cp.key, rows_read)
    return rows_read


def _bucket_summary_rows(shape: ModelShape, cp: CompiledProfile | None, version_id: int,
                         bucket: datetime, rows: Rows, thin: Rows | None = None
                         ) -> list[SummaryRow]:
    """A bucket's summaries built from its stored rows: the outcome, and drift on ``cp``;
    of its labeled ``thin`` rows (app/ingest/thin.py), the pairs only."""
    out = [] if thin is None or not thin.n else [SummaryRow(
        version_id, bucket, OUTCOME, "", 0, pack_outcome(
            outcome_summary(shape, thin, count_predictions=False)))]
    if not rows.n:
        return out
    out.append(SummaryRow(version_id, bucket, OUTCOME, "", rows.n, pack_outcome(
        outcome_summary(shape, rows, count_predictions=True))))
    if cp is not None:
        d = drift_summaries(shape, cp, rows, np.zeros(rows.n, np.int64), 1)[0]
        out.append(SummaryRow(version_id, bucket, DRIFT, cp.key, d.n, pack_drift(d)))
    return out


def _summarised(rows: list[SummaryRow]) -> dict[tuple[int, datetime], tuple[int, int]]:
    """(predictions, labeled pairs) the service's own outcome summaries count per (version,
    bucket)."""
    out: dict[tuple[int, datetime], tuple[int, int]] = {}
    for r in rows:
        if r.kind == OUTCOME and not r.origin and not r.span:
            o = unpack_outcome(r.payload)
            n, k = out.get((r.version_id, r.bucket_start), (0, 0))
            out[(r.version_id, r.bucket_start)] = (n + o.n, k + o.labeled)
    return out


@dataclass
class Audit:
    buckets: int = 0  # buckets whose stored rows were compared with their summaries
    repaired: int = 0  # buckets summarised again from their rows
    rows: int = 0  # predictions those buckets hold


def audit(engine: Engine, model: Any, start: datetime, end: datetime, *,
          bucket_seconds: float, profiles: Any) -> Audit:
    """Every stored prediction and label of [start, end) is in the summaries: per bucket,
    the predictions and labeled predictions stored against those the service's own summaries
    count, and a bucket that differs summarised again from its rows (rows written by a
    process that does not summarise: an older release during a rolling upgrade, a restore
    from a backup, a copy by hand). One snapshot for the comparison and the rebuild, and the
    model's upkeep lock, so ingest that commits meanwhile is neither lost nor counted twice.
    Buckets inside a rolled-up hour or day are not compared (the roll-up only reaches
    buckets older than the audit looks back, by default). ``profiles``: a ProfileCache
    (drift is rebuilt on each version's current profile)."""
    out = Audit()
    with repeatable_read(engine.connect()) as conn, conn.begin():
        if not locks.try_hold(conn, locks.SUMMARY_UPKEEP, model.id):
            return out  # another replica is at it
        stored = obs.stored_by_bucket(conn=conn, model_id=model.id, start=start, end=end,
                                      bucket_seconds=bucket_seconds)
        rolled = store.rolled_spans(conn=conn, model_id=model.id, start=start, end=end,
                                    longest=DAY)
        stored = {k: v for k, v in stored.items() if not any(
            b <= k[1] < b + timedelta(seconds=s) for b, s in rolled)}
        summarised: dict[tuple[int, datetime], tuple[int, int]] = {}
        for vid in sorted({v for v, _ in stored}):
            summarised.update(_summarised(store.window_rows(
                conn=conn, model_id=model.id, version_id=vid, start=start, end=end)))
        out.buckets = len(stored)
        for (vid, bucket), counts in sorted(stored.items()):
            if summarised.get((vid, bucket), (0, 0)) == counts:
                continue
            shape = ModelShape.of(registry.version_model(conn=conn, model=model,
                                                         version_id=vid))
            for kind in (OUTCOME, DRIFT):
                store.take(conn=conn, model_id=model.id, version_id=vid, bucket_start=bucket,
                           kind=kind)
            rows, thin = (rows_from_db(shape, obs.load_rows(
                conn=conn, model_id=model.id, version_id=vid, start=bucket,
                end=bucket + timedelta(seconds=bucket_seconds), thin=t)) for t in (False, True))
            cp = profiles.get(conn, [vid]).get(vid)
            store.append(conn=conn, model_id=model.id,
                         rows=_bucket_summary_rows(shape, cp, vid, bucket, rows, thin))
            log.warning("summaries of model %s version %s bucket %s did not count its stored "
                        "rows (%s stored, %s summarised): summarised again", model.name, vid,
                        bucket.isoformat(), counts, summarised.get((vid, bucket), (0, 0)))
            out.repaired += 1
            out.rows += rows.n
    return out


def backfill(engine: Engine, model: Any, version_id: int, received_before: datetime,
             cp: CompiledProfile | None, bucket_seconds: float) -> int | None:
    """Summarise a version's rows stored before summaries existed, in one transaction that
    also retires its backfill entry (so no row is ever summarised twice). Returns the rows
    read, or None when another replica holds it."""
    step = timedelta(seconds=bucket_seconds)
    total = 0
    with repeatable_read(engine.connect()) as conn, conn.begin():
        shape = ModelShape.of(registry.version_model(conn=conn, model=model,
                                                     version_id=version_id))
        if not locks.try_hold(conn, locks.SUMMARY_BACKFILL, version_id):
            return None
        if version_id not in {v for _, v, _ in store.pending_backfill(conn=conn)}:
            return 0
        span = obs.received_range(conn=conn, model_id=model.id, version_id=version_id,
                                  received_before=received_before)
        bucket, last = (span[0], span[0]) if span is None else whole_buckets(
            span[0], span[1] + timedelta(microseconds=1), bucket_seconds)
        while bucket < last:
            db_rows = obs.load_rows(conn=conn, model_id=model.id, version_id=version_id,
                                    start=bucket, end=bucket + step,
                                    received_before=received_before)
            if db_rows:
                rows = rows_from_db(shape, db_rows)
                store.append(conn=conn, model_id=model.id, rows=_bucket_summary_rows(
                    shape, cp, version_id, bucket, rows))
                total += rows.n
            bucket += step
        store.finish_backfill(conn=conn, version_id=version_id)
    return total
