"""Models and versions: plain functions over a connection, keyword-only arguments."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select
from sqlalchemy.exc import IntegrityError

from app.errors import not_found
from app.storage.db import as_utc
from app.storage.summaries import OUTCOME
from app.storage.tables import (
    bucket_summaries,
    feature_weights,
    job_runs,
    labels,
    maintenance_windows,
    metric_results,
    model_versions,
    models,
    pending_labels,
    prediction_keys,
    predictions,
    reference_profiles,
    slo_counters,
    summary_backfill,
    summary_imports,
    version_deltas,
    weight_stats,
)
from app.storage.weights import feature_weights_of


@dataclass(frozen=True)
class ModelRow:
    id: int
    name: str
    task: str
    features: list[dict[str, str]]
    cohort_keys: list[str]
    classes: list[str] | None
    created_at: datetime
    policy: dict[str, Any] = field(default_factory=dict)  # the knobs it overrides

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "features": self.features,
            "cohort_keys": self.cohort_keys,
            "classes": self.classes,
        }


@dataclass(frozen=True)
class VersionRow:
    id: int
    model_id: int
    version: str
    created_at: datetime
    registered_at: datetime
    metadata: dict[str, Any]
    features: list[dict[str, str]] | None = None  # its own list; None: the model's


def for_version(model: ModelRow, features: list[dict[str, str]] | None) -> ModelRow:
    """The model as one of its versions sees it: with the version's own feature list, if it
    declared one. Profiles, references and summaries of the version are built from this."""
    return model if features is None else replace(model, features=features)


def version_model(*, conn: Connection, model: ModelRow, version_id: int) -> ModelRow:
    """``for_version`` by version id (one small query)."""
    features = conn.execute(select(model_versions.c.features).where(
        model_versions.c.id == version_id)).scalar_one_or_none()
    return for_version(model, features)


def _model(row: Any) -> ModelRow:
    return ModelRow(
        id=row.id, name=row.name, task=row.task, features=row.features,
        cohort_keys=row.cohort_keys, classes=row.classes, created_at=as_utc(row.created_at),
        policy=row.policy or {},
    )


def _version(row: Any) -> VersionRow:
    return VersionRow(
        id=row.id, model_id=row.model_id, version=row.version,
        created_at=as_utc(row.created_at), registered_at=as_utc(row.registered_at),
        metadata=row.metadata, features=row.features,
    )


def get_model(*, conn: Connection, name: str) -> ModelRow | None:
    row = conn.execute(select(models).where(models.c.name == name)).first()
    return _model(row) if row else None


def require_model(*, conn: Connection, name: str) -> ModelRow:
    """The model, or the 404 every route gives for a name that is not registered."""
    row = get_model(conn=conn, name=name)
    if row is None:
        raise not_found("unknown_model", f"model {name[:128]!r} is not registered", "model")
    return row


def require_version(*, conn: Connection, model: ModelRow, version: str) -> VersionRow:
    row = get_version(conn=conn, model_id=model.id, version=version)
    if row is None:
        raise not_found("unknown_version", f"version {version[:128]!r} of {model.name!r} is "
                        "not registered", "version")
    return row


def get_models(*, conn: Connection, names: set[str]) -> dict[str, ModelRow]:
    if not names:
        return {}
    rows = conn.execute(select(models).where(models.c.name.in_(sorted(names))))
    return {r.name: _model(r) for r in rows}


def list_models(*, conn: Connection) -> list[tuple[ModelRow, int]]:
    counts = (
        select(model_versions.c.model_id, func.count().label("n"))
        .group_by(model_versions.c.model_id)
        .subquery()
    )
    rows = conn.execute(
        select(models, func.coalesce(counts.c.n, 0).label("n_versions"))
        .outerjoin(counts, counts.c.model_id == models.c.id)
        .order_by(models.c.name)
    )
    return [(_model(r), int(r.n_versions)) for r in rows]


def count_versions(*, conn: Connection, model_id: int) -> int:
    q = select(func.count()).select_from(model_versions)
    return int(conn.execute(q.where(model_versions.c.model_id == model_id)).scalar_one())


def create_model(*, conn: Connection, definition: dict[str, Any],
                 policy: dict[str, Any] | None = None) -> tuple[ModelRow, bool]:
    """Insert, or return the existing identical model. ``created`` tells which. A ``policy``
    of None matches any stored one (a pipeline re-registering without one leaves the policy
    an operator set alone); a given one must equal the stored policy.

    Raises ``ConflictError`` when the name is taken by a different definition."""
    existing = get_model(conn=conn, name=definition["name"])
    if existing is None:
        try:
            with conn.begin_nested():
                conn.execute(models.insert().values(**definition, policy=policy or None,
                                                    created_at=datetime.now(UTC)))
            return get_model(conn=conn, name=definition["name"]), True  # type: ignore[return-value]
        except IntegrityError:  # a concurrent registration won the race
            existing = get_model(conn=conn, name=definition["name"])
            assert existing is not None
    differing = _diff_fields(existing.definition(), definition)
    if policy is not None and policy != existing.policy:
        differing.append("policy")
    if differing:
        raise ConflictError(differing)
    return existing, False


def set_policy(*, conn: Connection, model: ModelRow, policy: dict[str, Any]) -> ModelRow:
    """Replace the model's policy (an empty one follows the service-wide defaults)."""
    conn.execute(models.update().where(models.c.id == model.id).values(policy=policy or None))
    row = get_model(conn=conn, name=model.name)
    assert row is not None
    return row


def set_cohort_keys(*, conn: Connection, model: ModelRow, cohort_keys: list[str]) -> ModelRow:
    """Replace the model's cohort keys (the caller has checked the old ones are kept)."""
    conn.execute(models.update().where(models.c.id == model.id)
                 .values(cohort_keys=cohort_keys))
    row = get_model(conn=conn, name=model.name)
    assert row is not None
    return row


def get_version(*, conn: Connection, model_id: int, version: str) -> VersionRow | None:
    row = conn.execute(
        select(model_versions).where(
            model_versions.c.model_id == model_id, model_versions.c.version == version
        )
    ).first()
    return _version(row) if row else None


def list_versions(*, conn: Connection, model_id: int) -> list[VersionRow]:
    rows = conn.execute(
        select(model_versions)
        .where(model_versions.c.model_id == model_id)
        .order_by(model_versions.c.registered_at, model_versions.c.id)
    )
    return [_version(r) for r in rows]


def version_ids(*, conn: Connection, model_ids: set[int]) -> dict[tuple[int, str], int]:
    """(model_id, version) -> version id for every version of the given models: one query."""
    if not model_ids:
        return {}
    rows = conn.execute(
        select(model_versions.c.id, model_versions.c.model_id, model_versions.c.version).where(
            model_versions.c.model_id.in_(sorted(model_ids))
        )
    )
    return {(r.model_id, r.version): r.id for r in rows}


def version_features(*, conn: Connection, model_ids: set[int]
                     ) -> dict[int, list[dict[str, str]]]:
    """version id -> its own feature list, for the versions of the models that declared one."""
    if not model_ids:
        return {}
    v = model_versions
    rows = conn.execute(select(v.c.id, v.c.features).where(
        v.c.model_id.in_(sorted(model_ids)), v.c.features.is_not(None)))
    return {r.id: r.features for r in rows if r.features is not None}


def create_version(
    *, conn: Connection, model_id: int, version: str, created_at: datetime | None,
    metadata: dict[str, Any], features: list[dict[str, str]] | None = None,
) -> tuple[VersionRow, bool]:
    """Insert, or return the existing identical version. An omitted ``created_at`` matches any
    stored one, so a pipeline can retry a registration without remembering the first time."""
    existing = get_version(conn=conn, model_id=model_id, version=version)
    if existing is None:
        now = datetime.now(UTC)
        try:
            with conn.begin_nested():
                conn.execute(
                    model_versions.insert().values(
                        model_id=model_id, version=version, created_at=created_at or now,
                        registered_at=now, metadata=metadata, features=features,
                    )
                )
            row = get_version(conn=conn, model_id=model_id, version=version)
            assert row is not None
            return row, True
        except IntegrityError:
            existing = get_version(conn=conn, model_id=model_id, version=version)
            assert existing is not None
    differing = _diff_fields({"metadata": existing.metadata, "features": existing.features},
                             {"metadata": metadata, "features": features})
    if created_at is not None and as_utc(created_at) != existing.created_at:
        differing.append("created_at")
    if differing:
        raise ConflictError(differing)
    return existing, False


def _diff_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


class ConflictError(Exception):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


def has_predictions(*, conn: Connection, model_id: int, version_id: int) -> bool:
    """Whether any prediction of the version is stored (its counted bucket summaries)."""
    b = bucket_summaries
    return conn.execute(select(b.c.id).where(
        b.c.model_id == model_id, b.c.version_id == version_id, b.c.kind == OUTCOME,
        b.c.n > 0).limit(1)).first() is not None


def set_training(*, conn: Connection, version: VersionRow, training: dict[str, Any]
                 ) -> VersionRow:
    """Replace the version's ``training`` metadata block."""
    conn.execute(model_versions.update().where(model_versions.c.id == version.id).values(
        metadata={**version.metadata, "training": training}))
    row = get_version(conn=conn, model_id=version.model_id, version=version.version)
    assert row is not None
    return row


def feature_importance(*, conn: Connection, version_id: int) -> dict[str, float | None] | None:
    """Importance share per feature in the version (None when its per-feature weights are
    unknown)."""
    stats = feature_weights_of(conn=conn, version_id=version_id)
    return None if stats is None else {f["feature"]: f["importance"] for f in stats["features"]}


def training_blocks(*, conn: Connection, model_id: int) -> dict[int, dict[str, Any]]:
    """Each version's registered ``training`` metadata block ({} without one), by version id."""
    return {v.id: (v.metadata or {}).get("training") or {}
            for v in list_versions(conn=conn, model_id=model_id)}


# What a model or version holds beyond its registration, and so what a DELETE without force
# refuses to remove: production data and what the jobs computed from it.
DATA_TABLES = (predictions, labels, bucket_summaries, metric_results)


def stored_data(*, conn: Connection, model_id: int, version_id: int | None = None
                ) -> list[str]:
    """The tables holding data of the model (or of one of its versions), in DATA_TABLES
    order. A version's labels are those of its predictions."""
    out = []
    for t in DATA_TABLES:
        if t is labels:
            q = select(labels.c.model_id).where(labels.c.model_id == model_id)
            if version_id is not None:
                q = q.where(labels.c.prediction_id.in_(_version_ids(model_id, version_id)))
        else:
            q = select(t.c.model_id).where(t.c.model_id == model_id)
            if version_id is not None:
                q = q.where(t.c.version_id == version_id)
        if conn.execute(q.limit(1)).first() is not None:
            out.append(t.name)
    return out


def _version_ids(model_id: int, version_id: int) -> Any:
    p = predictions
    return select(p.c.prediction_id).where(p.c.model_id == model_id,
                                           p.c.version_id == version_id)


def _delete(conn: Connection, t: Table, *where: Any) -> tuple[str, int]:
    return t.name, conn.execute(delete(t).where(*where)).rowcount


def delete_version(*, conn: Connection, model: ModelRow, version: VersionRow
                   ) -> dict[str, int]:
    """Remove a version and everything stored for it: its predictions (and their labels and
    idempotency keys, so the ids may be sent again), bucket summaries, results, reference,
    weights and deltas. Rows removed per table."""
    m, v = model.id, version.id
    ids = _version_ids(m, v)
    counts = dict([
        _delete(conn, labels, labels.c.model_id == m, labels.c.prediction_id.in_(ids)),
        _delete(conn, prediction_keys, prediction_keys.c.model_id == m,
                prediction_keys.c.prediction_id.in_(ids)),
        _delete(conn, predictions, predictions.c.model_id == m, predictions.c.version_id == v),
        *(_delete(conn, t, t.c.model_id == m, t.c.version_id == v)
          for t in (bucket_summaries, summary_imports, metric_results, summary_backfill,
                    reference_profiles, weight_stats, feature_weights)),
        _delete(conn, version_deltas, (version_deltas.c.base_version_id == v)
                | (version_deltas.c.candidate_version_id == v)),
        _delete(conn, model_versions, model_versions.c.id == v),
    ])
    return counts


def delete_model(*, conn: Connection, model: ModelRow) -> dict[str, int]:
    """Remove a model, its versions and everything stored for it (job runs and maintenance
    windows included; the audit log keeps what was done). Rows removed per table."""
    m = model.id
    tables = (labels, prediction_keys, predictions, bucket_summaries, summary_imports,
              metric_results, summary_backfill, reference_profiles, weight_stats, feature_weights,
              version_deltas, job_runs, slo_counters, pending_labels, maintenance_windows,
              model_versions)
    counts = dict(_delete(conn, t, t.c.model_id == m) for t in tables)
    counts.update([_delete(conn, models, models.c.id == m)])
    return counts
