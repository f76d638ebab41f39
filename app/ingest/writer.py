"""Bulk writes of validated batches, atomic and idempotent.

Postgres: the common batch (all keys new, no inline label, no label waiting for its models)
is copied straight into ``prediction_keys`` and ``predictions``; any other goes by COPY into a
per-connection temporary staging table, then one statement that claims new keys in
``prediction_keys`` and inserts exactly those predictions and their inline labels. Concurrent
identical batches block on the key index and store each record once. SQLite: the same
claim-then-insert with executemany, inside BEGIN IMMEDIATE, which serialises writers.

A (prediction, label) pair completes in the transaction that stores the second of the two, and
is counted there (summaries, SLO counters). So that a label and its prediction in flight at
the same time cannot both miss each other, prediction batches and label batches of one model
exclude one another by advisory locks (Postgres; storage/locks.py): a label batch sees every
prediction committed before it, and a prediction batch every label. Prediction batches share
them; label batches share them too where MODELMON_PAIRING_LOCKS is `striped` (each takes one
of the model's stripes), and run one after the other otherwise.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, Table, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from app.ingest.rows import (
    PREDICTION_COLUMNS,
    CompletedPair,
    LabelRow,
    PredictionRow,
    StoredLabel,
)
from app.storage import locks
from app.storage.db import as_utc
from app.storage.tables import (
    STAGE_DDL,
    STAGE_TABLE,
    STAGE_TYPES,
    labels,
    pending_labels,
    prediction_keys,
    predictions,
)

STAGE_COLUMNS = tuple(c for c, _ in STAGE_TYPES)
assert STAGE_COLUMNS == PredictionRow._fields  # a row is copied into the staging table as is
_JSON_COLUMNS = {"features", "cohorts", "probabilities"}
_IN_CHUNK = 400  # keys per IN (...) lookup on SQLite, under its bound-parameter limit


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int
    new_rows: list[PredictionRow]  # the rows this call stored
    # labels that were stored before their (now stored) prediction
    waiting_labels: dict[tuple[int, str], StoredLabel]
    # (model_id, prediction_id) of the rows that were stored already
    duplicate_keys: set[tuple[int, str]] = field(default_factory=set)


KEY_CONSTRAINT = prediction_keys.primary_key.name


def write_predictions(conn: Connection, rows: Sequence[PredictionRow], *,
                      assume_new: bool = False,
                      while_copying: Callable[[], None] | None = None) -> WriteResult:
    """Store the rows whose keys are not stored yet. ``assume_new`` (Postgres): claim the
    keys with a plain INSERT, cheaper than ON CONFLICT's speculative insertion (about 3 ms of
    PostgreSQL CPU per 1,000 keys, bench/bench_ingest_cpu.py); a key stored already, or one
    committed meanwhile by a concurrent batch, then fails the statement with a unique
    violation on KEY_CONSTRAINT, and the caller runs the transaction again without it.

    ``while_copying`` is called while the rows are copied straight into their tables
    (Postgres, the common case), and only then: the rows will be stored as they are, with no
    duplicate and no waiting label, unless the COPY fails. The caller starts there, on
    another thread, what it would otherwise compute after this call, so that it runs while
    PostgreSQL inserts the rows."""
    if not rows:
        return WriteResult(0, 0, [], {})
    if conn.dialect.name == "postgresql":
        duplicates, waiting = _pg_write_predictions(conn, rows, assume_new, while_copying)
    else:  # SQLite serialises writers: no pairing lock
        duplicates, waiting = _generic_write_predictions(conn, rows)
    new = [r for r in rows if r.key not in duplicates] if duplicates else list(rows)
    return WriteResult(len(new), len(rows) - len(new), new, waiting, duplicates)


def _claim_and_insert(inline_labels: bool, assume_new: bool) -> str:
    """One statement: claim new keys in prediction_keys, insert exactly those predictions (and
    their inline labels, when the batch has any), and answer only the exceptions: the batch's
    keys that were stored already, and the labels that were waiting for the predictions it
    stored. The final SELECT reads `labels` as of the statement's snapshot: labels that were
    waiting, not the inline ones it inserts."""
    lab = """
, lab AS (
    INSERT INTO labels (model_id, prediction_id, label_class, label_value, ts, received_at, source)
    SELECT model_id, prediction_id, gt_class, gt_value, ts, received_at, 'inline' FROM new_rows
    WHERE gt_class IS NOT NULL OR gt_value IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
)""" if inline_labels else ""
    conflict = "" if assume_new else "\n    ON CONFLICT DO NOTHING"
    return f"""
WITH new_keys AS (
    INSERT INTO prediction_keys (model_id, prediction_id, ts)
    SELECT model_id, prediction_id, ts FROM {STAGE_TABLE}{conflict}
    RETURNING model_id, prediction_id
), new_rows AS (
    SELECT s.* FROM {STAGE_TABLE} s JOIN new_keys k USING (model_id, prediction_id)
), ins AS (
    INSERT INTO predictions ({", ".join(PREDICTION_COLUMNS)})
    SELECT {", ".join(f"CAST({c} AS json)" if c in _JSON_COLUMNS else c
                      for c in PREDICTION_COLUMNS)} FROM new_rows
    RETURNING 1
){lab}
SELECT true, s.model_id, s.prediction_id, NULL, NULL::double precision, NULL::timestamptz
FROM {STAGE_TABLE} s LEFT JOIN new_keys k USING (model_id, prediction_id)
WHERE k.model_id IS NULL
UNION ALL
SELECT false, k.model_id, k.prediction_id, l.label_class, l.label_value, l.ts
FROM new_keys k JOIN labels l USING (model_id, prediction_id)
"""


_PG_CLAIM = {(inline, new): _claim_and_insert(inline, new)
             for inline in (False, True) for new in (False, True)}
_STAGE_COPY = (f"COPY {STAGE_TABLE} ({', '.join(c for c, _ in STAGE_TYPES)}) "
               "FROM STDIN (FORMAT BINARY)")
_STAGE_TYPE_NAMES = [t for _, t in STAGE_TYPES]

Claims = tuple[set[tuple[int, str]], dict[tuple[int, str], StoredLabel]]


_KEY_COPY = (f"COPY {prediction_keys.name} (model_id, prediction_id, ts) "
             "FROM STDIN (FORMAT BINARY)")
_PREDICTION_COPY = (f"COPY {predictions.name} ({', '.join(PREDICTION_COLUMNS)}) "
                    "FROM STDIN (FORMAT BINARY)")
_KEY_TYPES = ["int8", "text", "timestamptz"]
_PREDICTION_TYPES = _STAGE_TYPE_NAMES[:len(PREDICTION_COLUMNS)]  # json columns as their text


def _waiting_sql(model_ids: set[int]) -> str:
    ids = ", ".join(str(int(m)) for m in sorted(model_ids))
    return f"SELECT count(*) FROM {pending_labels.name} WHERE n > 0 AND model_id IN ({ids})"


def _pg_write_predictions(conn: Connection, rows: Sequence[PredictionRow],
                          assume_new: bool,
                          while_copying: Callable[[], None] | None = None) -> Claims:
    """(keys that were stored already, labels that were waiting for the rows now stored).

    The common case, every key new (``assume_new``), no inline label and no label waiting
    for any of the batch's models: COPY straight into prediction_keys and predictions (the
    partitioned table routes each row). COPY inserts rows in bulk; staging them first and
    inserting with INSERT ... SELECT cost about 60% more PostgreSQL CPU for the write, 25%
    more for the whole batch (BENCHMARKS.md, fifth ingest round). Otherwise the rows go
    through the staging table and one statement that claims, inserts and reports
    (_claim_and_insert). No label can start waiting meanwhile: label batches take the
    model's pairing lock, or one of its stripes, exclusively."""
    models = {r.model_id for r in rows}
    inline = any(r.has_label for r in rows)
    with conn.connection.driver_connection.cursor() as cur:
        # The pairing locks (shared) first, in one round trip with what follows them.
        lock = locks.pairing_sql(models, labels=False)
        if assume_new and not inline:
            cur.execute(lock + _waiting_sql(models))
            while cur.nextset():  # the count is the last statement's
                pass
            if not cur.fetchone()[0]:
                _copy_direct(cur, rows, while_copying)
                return set(), {}
            lock = ""  # held already
        # The staging table in the transaction, not once per session: behind a
        # transaction-pooling proxy (PgBouncer) consecutive transactions may run on
        # different server sessions.
        cur.execute(lock + STAGE_DDL)
        _copy(cur, _STAGE_COPY, _STAGE_TYPE_NAMES, rows)
    # Through SQLAlchemy, so that errors are wrapped as on every other statement.
    found = conn.exec_driver_sql(_PG_CLAIM[inline, assume_new]).all()
    duplicates = {(m, p) for dup, m, p, *_ in found if dup}
    waiting = {(m, p): StoredLabel(c, v, as_utc(ts))
               for dup, m, p, c, v, ts in found if not dup}
    return duplicates, waiting


def _copy(cur: psycopg.Cursor, statement: str, types: list[str], rows: Sequence[tuple],
          before_end: Callable[[], None] | None = None) -> None:
    """COPY the rows' first ``len(types)`` columns; ``before_end`` is called once every row
    is written (all but the last buffer is sent), before waiting for PostgreSQL to finish."""
    width = len(types)
    with cur.copy(statement) as cp:
        cp.set_types(types)
        if len(rows[0]) == width:
            for row in rows:
                cp.write_row(row)
        else:  # the predictions table: a row without its inline label
            for row in rows:
                cp.write_row(row[:width])
        if before_end is not None:
            before_end()


def _copy_direct(cur: psycopg.Cursor, rows: Sequence[PredictionRow],
                 while_copying: Callable[[], None] | None = None) -> None:
    """The keys, then the predictions. A key stored already (or committed meanwhile by a
    concurrent batch) fails the first COPY with a unique violation, a day without its
    partition the second with a check violation: raised as SQLAlchemy's IntegrityError, as
    the same errors of an INSERT are, so the caller's retries see one kind of error.
    ``while_copying`` is called once the predictions are written, while PostgreSQL still
    inserts them: the caller's other work then competes with neither COPY's formatting for
    the interpreter."""
    statement = _KEY_COPY
    try:
        with cur.copy(_KEY_COPY) as cp:
            cp.set_types(_KEY_TYPES)
            for r in rows:
                cp.write_row((r.model_id, r.prediction_id, r.ts))
        statement = _PREDICTION_COPY
        _copy(cur, _PREDICTION_COPY, _PREDICTION_TYPES, rows, while_copying)
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(statement, None, exc) from exc


def _insert_ignoring_conflicts(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING the primary key, on either store."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing().returning(table.c.model_id,
                                                           table.c.prediction_id)


def _generic_write_predictions(conn: Connection, rows: Sequence[PredictionRow]) -> Claims:
    claimed = {
        (model_id, prediction_id)
        for model_id, prediction_id in conn.execute(
            _insert_ignoring_conflicts(conn, prediction_keys),
            [{"model_id": r.model_id, "prediction_id": r.prediction_id, "ts": r.ts}
             for r in rows],
        )
    }
    duplicates = {r.key for r in rows} - claimed
    new = [r for r in rows if r.key in claimed]
    waiting: dict[tuple[int, str], StoredLabel] = {}
    if not new:
        return duplicates, waiting
    for start in range(0, len(new), _IN_CHUNK):  # labels that were waiting for these
        chunk = [r.key for r in new[start:start + _IN_CHUNK]]
        q = select(labels.c.model_id, labels.c.prediction_id, labels.c.label_class,
                   labels.c.label_value, labels.c.ts).where(
            tuple_(labels.c.model_id, labels.c.prediction_id).in_(chunk))
        waiting.update({(m, p): StoredLabel(c, v, as_utc(ts))
                        for m, p, c, v, ts in conn.execute(q)})
    conn.execute(predictions.insert(), [_prediction_params(r) for r in new])
    inline = [
        {"model_id": r.model_id, "prediction_id": r.prediction_id, "label_class": r.gt_class,
         "label_value": r.gt_value, "ts": r.ts, "received_at": r.received_at,
         "source": "inline"}
        for r in new if r.has_label
    ]
    if inline:
        conn.execute(_insert_ignoring_conflicts(conn, labels), inline).all()
    return duplicates, waiting


def _prediction_params(r: PredictionRow) -> dict[str, Any]:
    params = {c: getattr(r, c) for c in PREDICTION_COLUMNS}
    # The generic path binds Python objects to the JSON columns.
    params["features"] = json.loads(r.features)
    params["cohorts"] = json.loads(r.cohorts)
    params["probabilities"] = None if r.probabilities is None else json.loads(r.probabilities)
    return params


@dataclass(frozen=True)
class LabelResult:
    matched: int
    pending: int
    duplicates: int
    # the labels this call stored
    new_labels: list[LabelRow] = field(default_factory=list)
    # the stored predictions those labels joined
    pairs: list[CompletedPair] = field(default_factory=list)

    @property
    def matched_keys(self) -> set[tuple[int, str]]:
        return {(p.model_id, p.prediction_id) for p in self.pairs}


def write_labels(conn: Connection, rows: Sequence[LabelRow], repeats: int, *,
                 striped: bool = False) -> LabelResult:
    """Store new labels; ``matched`` counts those whose prediction is already stored (the
    pairs they complete are returned), the rest wait (``pending``) for their prediction.
    ``rows`` hold one label per (model, prediction_id). ``striped`` (Postgres): take one of
    the models' pairing stripes, at random, not their whole pairing lock (locks.pairing_sql)."""
    if not rows:
        return LabelResult(0, 0, repeats)
    now = datetime.now(UTC)
    if conn.dialect.name == "postgresql":
        stripe = random.randrange(locks.STRIPES) if striped else None
        new, pairs = _pg_write_labels(conn, rows, now, stripe)
    else:  # SQLite serialises writers: no pairing lock
        stored = set(map(tuple, conn.execute(
            _insert_ignoring_conflicts(conn, labels),
            [{**r._asdict(), "received_at": now, "source": "labels"} for r in rows])))
        new = [r for r in rows if (r.model_id, r.prediction_id) in stored]
        pairs = _generic_pairs(conn, new)
    return LabelResult(len(pairs), len(new) - len(pairs), len(rows) - len(new) + repeats,
                       new, pairs)


def _pg_write_labels(conn: Connection, rows: Sequence[LabelRow], now: datetime,
                     stripe: int | None) -> tuple[list[LabelRow], list[CompletedPair]]:
    """(the labels stored, the pairs they complete), in the order of ``rows``: the pairing
    locks (exclusive: the models' own, or their ``stripe``), then one statement that inserts
    the labels and joins each new one to its stored prediction, in one round trip (a second
    would lengthen the time the lock is held by the wait for it). The batch travels as one
    JSON document written into the statement (orjson writes it in well under a millisecond;
    psycopg's array dumpers took tens of milliseconds for the same rows)."""
    doc = orjson.dumps(rows, default=tuple, option=orjson.OPT_NAIVE_UTC).decode()
    statement = (locks.pairing_sql({r.model_id for r in rows}, labels=True, stripe=stripe)
                 + _PG_INSERT_AND_PAIR.replace(":received_at", f"'{now.isoformat()}'")
                 .replace(":rows", _dollar_quoted(doc)))
    with conn.connection.driver_connection.cursor() as cur:
        cur.execute(statement)  # no parameters: several statements in one message
        while cur.nextset():  # the labels' are the last statement's rows
            pass
        found = {(m, pid): rest for m, pid, *rest in cur.fetchall()}
    new: list[LabelRow] = []
    pairs: list[CompletedPair] = []
    for r in rows:
        hit = found.get((r.model_id, r.prediction_id))
        if hit is None:  # stored already
            continue
        new.append(r)
        vid, ts, cohorts, score, value, probs = hit
        if vid is not None:  # its prediction is stored: PostgreSQL sends the documents as
            # text, which orjson reads several times faster than json.loads
            out = CompletedPair(r.model_id, r.prediction_id, vid, as_utc(ts),
                                (orjson.loads(cohorts) or {}) if cohorts else {}, score, value,
                                None if probs is None else orjson.loads(probs),
                                r.label_class, r.label_value, r.ts)
            pairs.append(out)
    return new, pairs


def _dollar_quoted(doc: str) -> str:
    """A JSON document as a dollar-quoted literal, under a tag it does not contain: taken as
    it is, whatever quotes and backslashes it holds (and, ending in a bracket, it cannot end
    in part of the tag)."""
    n = 0
    while f"$m{n}$" in doc:
        n += 1
    return f"$m{n}${doc}$m{n}$"


def _generic_pairs(conn: Connection, new: Sequence[LabelRow]) -> list[CompletedPair]:
    label_of = {(r.model_id, r.prediction_id): r for r in new}
    keys = list(label_of)
    pk, p = prediction_keys, predictions
    found = []
    for start in range(0, len(keys), _IN_CHUNK):
        q = (select(p.c.model_id, p.c.prediction_id, p.c.version_id, p.c.ts, p.c.cohorts,
                    p.c.score, p.c.value, p.c.probabilities)
             .select_from(pk.join(p, (p.c.model_id == pk.c.model_id)
                                  & (p.c.ts == pk.c.ts)
                                  & (p.c.prediction_id == pk.c.prediction_id)))
             .where(tuple_(pk.c.model_id, pk.c.prediction_id)
                    .in_(keys[start:start + _IN_CHUNK])))
        found += conn.execute(q).all()
    out: list[CompletedPair] = []
    for m, pid, vid, ts, cohorts, score, value, probs in found:
        lab = label_of[(m, pid)]
        out.append(CompletedPair(m, pid, vid, as_utc(ts), cohorts or {}, score, value, probs,
                                 lab.label_class, lab.label_value, lab.ts))
    return out


# The batch's labels as JSON arrays [model_id, prediction_id, class, value, timestamp]: the
# text values are exact (NUL and lone surrogates never reach here, decode.py refuses them),
# a float is written in the shortest form that reads back to itself (validation refuses
# non-finite values; jsonb keeps a number's decimal digits, so the cast reads the same float)
# and a timestamp with its microseconds and offset. jsonb, parsed once, not json, whose
# elements each ->> would parse again. The labels' RETURNING
# rows are joined to their predictions in the same statement (LEFT: a label without its
# stored prediction waits); the pairing lock (or stripe), taken before, keeps predictions committed
# meanwhile out of both. Each label looks up its key, then its prediction by the whole primary
# key (its partition found from the key's time), each a subquery run per label (OFFSET 0
# keeps it one): planned as joins, PostgreSQL hashed the batch against a scan of every stored
# key, or looked predictions up without their time, through every partition's index.
_PG_INSERT_AND_PAIR = """
WITH new AS (
    INSERT INTO labels (model_id, prediction_id, label_class, label_value, ts, received_at,
                        source)
    SELECT CAST(e->>0 AS bigint), e->>1, e->>2, CAST(e->>3 AS double precision),
           CAST(e->>4 AS timestamptz), :received_at, 'labels'
    FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS e
    ON CONFLICT DO NOTHING
    RETURNING model_id, prediction_id
)
SELECT n.model_id, n.prediction_id, p.version_id, p.ts, p.cohorts, p.score, p.value,
       p.probabilities
FROM new n
LEFT JOIN LATERAL (
    SELECT pk.ts FROM prediction_keys pk
    WHERE pk.model_id = n.model_id AND pk.prediction_id = n.prediction_id
    OFFSET 0
) k ON true
LEFT JOIN LATERAL (
    SELECT p.version_id, p.ts, CAST(p.cohorts AS text) AS cohorts, p.score, p.value,
           CAST(p.probabilities AS text) AS probabilities
    FROM predictions p
    WHERE p.model_id = n.model_id AND p.ts = k.ts AND p.prediction_id = n.prediction_id
    OFFSET 0
) p ON true
"""
