"""The count of labels waiting for their prediction, per model (tables.pending_labels)."""

from __future__ import annotations

from sqlalchemy import Connection, and_, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.storage.tables import labels, pending_labels, prediction_keys


def add(conn: Connection, deltas: dict[int, int]) -> dict[int, int]:
    """Add to the models' counts (negative: labels paired); returns the new counts."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    out: dict[int, int] = {}
    for model_id, delta in sorted(deltas.items()):
        if not delta:
            continue
        stmt = insert(pending_labels).values(model_id=model_id, n=max(delta, 0))
        stmt = stmt.on_conflict_do_update(
            index_elements=[pending_labels.c.model_id],
            set_={"n": func.greatest(pending_labels.c.n + delta, 0)
                  if conn.dialect.name == "postgresql"
                  else func.max(pending_labels.c.n + delta, 0)})
        out[model_id] = int(conn.execute(stmt.returning(pending_labels.c.n)).scalar_one())
    return out


def waiting_query():  # noqa: ANN201
    """(model_id, labels stored whose prediction key is not) for every model."""
    lab, k = labels, prediction_keys
    return (select(lab.c.model_id, func.count())
            .where(~exists().where(and_(k.c.model_id == lab.c.model_id,
                                        k.c.prediction_id == lab.c.prediction_id)))
            .group_by(lab.c.model_id))


def recount(conn: Connection) -> None:
    """Count every model's waiting labels again, exactly (after retention deleted rows)."""
    counts = dict(conn.execute(waiting_query()).all())
    conn.execute(pending_labels.delete())
    if counts:
        conn.execute(pending_labels.insert(),
                     [{"model_id": m, "n": n} for m, n in sorted(counts.items())])
