"""A version's weight statistics (per tensor and overall), its per-feature weights, and the
deltas between versions: plain functions over a connection, JSON in and out (the registry
turns them into app.monitoring's types)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from app.storage.tables import feature_weights, version_deltas, weight_stats

# The tensor name of the row holding the whole version's statistics.
OVERALL = "__all__"


def tensor_stats(*, conn: Connection, version_id: int) -> list[dict[str, Any]] | None:
    """The version's per-tensor statistics in tensor-name order (the overall row left out),
    or None when no weights were uploaded for it."""
    rows = conn.execute(select(weight_stats.c.tensor, weight_stats.c.stats)
                        .where(weight_stats.c.version_id == version_id)
                        .order_by(weight_stats.c.tensor)).all()
    if not rows:
        return None
    return [r.stats for r in rows if r.tensor != OVERALL]


def feature_weights_of(*, conn: Connection, version_id: int) -> dict[str, Any] | None:
    """The version's stored per-feature weights (FeatureWeights.to_dict()), None without."""
    return conn.execute(select(feature_weights.c.stats)
                        .where(feature_weights.c.version_id == version_id)).scalar()


def replace_weights(*, conn: Connection, model_id: int, version_id: int,
                    tensors: list[tuple[str, dict[str, Any]]], overall: dict[str, Any],
                    features: dict[str, Any] | None) -> None:
    """Replace the version's statistics: ``tensors`` as (name, stats), the ``overall`` row,
    and its per-feature weights (``features`` with tensor, axis, nonzero and stats; None
    removes them)."""
    now = datetime.now(UTC)
    conn.execute(delete(weight_stats).where(weight_stats.c.version_id == version_id))
    rows = [{"version_id": version_id, "tensor": name, "model_id": model_id, "stats": stats,
             "created_at": now} for name, stats in tensors]
    rows.append({"version_id": version_id, "tensor": OVERALL, "model_id": model_id,
                 "stats": overall, "created_at": now})
    conn.execute(insert(weight_stats), rows)
    conn.execute(delete(feature_weights).where(feature_weights.c.version_id == version_id))
    if features is not None:
        conn.execute(insert(feature_weights).values(
            version_id=version_id, model_id=model_id, created_at=now, **features))


def put_delta(*, conn: Connection, model_id: int, base_version_id: int,
              candidate_version_id: int, delta: dict[str, Any]) -> None:
    """Store (replace) the delta between two versions' weights."""
    d = version_deltas
    conn.execute(delete(d).where(d.c.base_version_id == base_version_id,
                                 d.c.candidate_version_id == candidate_version_id))
    conn.execute(insert(d).values(
        base_version_id=base_version_id, candidate_version_id=candidate_version_id,
        model_id=model_id, delta=delta, computed_at=datetime.now(UTC)))


def with_weights(*, conn: Connection, version_ids: list[int]) -> set[int]:
    """Those of the versions that have weights uploaded."""
    if not version_ids:
        return set()
    rows = conn.execute(select(weight_stats.c.version_id).distinct()
                        .where(weight_stats.c.version_id.in_(version_ids)))
    return {r.version_id for r in rows}
