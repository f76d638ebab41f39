"""Registering, changing and deleting versions of a model: the rules and their
transactions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from app.errors import Conflict, Invalid, Problem
from app.registry.models import Deleted, conflict, refuse_unless_forced
from app.storage import maintenance
from app.storage import registry as store
from app.storage.registry import ModelRow, VersionRow


@dataclass(frozen=True)
class RegisteredVersion:
    """A version as the registry answers for it, with its model's registered name."""

    model: str
    row: VersionRow


def require_version(*, engine: Engine, model: str, version: str
                    ) -> tuple[ModelRow, VersionRow]:
    """The model and version, or NotFound for either (what an upload checks before it reads
    its body)."""
    with engine.connect() as conn:
        m = store.require_model(conn=conn, name=model)
        return m, store.require_version(conn=conn, model=m, version=version)


def create_version(*, engine: Engine, model: str, version: str, created_at: datetime | None,
                   metadata: dict[str, Any], features: list[dict[str, str]] | None,
                   maintenance_seconds: float | None) -> tuple[RegisteredVersion, bool]:
    """Register a version, or return the identical one already registered (``created``
    False). A new registration with ``maintenance_seconds`` opens the model's maintenance
    window from now, in the same transaction."""
    with engine.begin() as conn:
        m = store.require_model(conn=conn, name=model)
        if features is not None:
            check_version_features(conn, m, features)
        try:
            row, created = store.create_version(
                conn=conn, model_id=m.id, version=version, created_at=created_at,
                metadata=metadata, features=features,
            )
        except store.ConflictError as exc:
            raise conflict(f"version {version!r} of {model[:128]!r}", exc.fields) from None
        if created and maintenance_seconds is not None:
            now = datetime.now(UTC)
            maintenance.open_window(
                conn=conn, model_id=m.id, starts_at=now,
                ends_at=now + timedelta(seconds=maintenance_seconds),
                reason=f"version {version} registered")
        return RegisteredVersion(m.name, row), created


def _kind(f: dict[str, Any]) -> str:
    return f"embedding of dim {f['dim']}" if f["type"] == "embedding" else f["type"]


def check_version_features(conn: Connection, m: ModelRow,
                           features: list[dict[str, str]]) -> None:
    """Invalid for a feature declared with another type than the model's, or than another
    version's added feature of that name: a name means one column of one type per model (the
    summaries hold one per name)."""
    declared = {f["name"]: (_kind(f), "the model") for f in m.features}
    for own in store.version_features(conn=conn, model_ids={m.id}).values():
        for f in own:
            declared.setdefault(f["name"], (_kind(f), "another version"))
    bad = [Problem(f"declared {declared[f['name']][0]} by {declared[f['name']][1]}; a "
                   "feature keeps its type (and an embedding its dim) across versions (use a "
                   "new name)", field=f"features.{i}.type")
           for i, f in enumerate(features)
           if f["name"] in declared and declared[f["name"]][0] != _kind(f)]
    if bad:
        raise Invalid("validation_error", "the version's features are invalid; see "
                      "details", bad)


def list_versions(*, engine: Engine, model: str) -> list[RegisteredVersion]:
    """The model's versions in registration order."""
    with engine.connect() as conn:
        m = store.require_model(conn=conn, name=model)
        return [RegisteredVersion(m.name, r)
                for r in store.list_versions(conn=conn, model_id=m.id)]


def get_version(*, engine: Engine, model: str, version: str) -> RegisteredVersion:
    """One version (NotFound naming the model or the version)."""
    with engine.connect() as conn:
        m = store.require_model(conn=conn, name=model)
        return RegisteredVersion(m.name, store.require_version(conn=conn, model=m,
                                                               version=version))


def set_training(*, engine: Engine, model: str, version: str, training: dict[str, Any]
                 ) -> RegisteredVersion:
    """Replace the version's training metadata; Conflict (``version_in_use``) once a
    prediction of it is stored, since what it was trained as is then part of its record."""
    with engine.begin() as conn:
        m = store.require_model(conn=conn, name=model)
        v = store.require_version(conn=conn, model=m, version=version)
        if store.has_predictions(conn=conn, model_id=m.id, version_id=v.id):
            raise Conflict(
                "version_in_use",
                "the version has stored predictions: what it was trained as is fixed; "
                "register a new version to change it",
                [Problem("predictions are stored for this version", field="version")])
        return RegisteredVersion(m.name, store.set_training(conn=conn, version=v,
                                                            training=training))


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


def guard_replacement(conn: Connection, model: ModelRow, v: VersionRow, what: str,
                      stored: Any, new: Any, replace: bool) -> None:
    """Conflict (``version_in_use``) when an upload would change the version's ``what``
    (its weights or reference, as ``stored`` differs from ``new``) after its predictions are
    stored, unless ``replace`` (``?replace=true``, audited as a replacement). A first upload
    and one identical to what is stored are no change."""
    if (replace or stored is None or _canonical(stored) == _canonical(new)
            or not store.has_predictions(conn=conn, model_id=model.id, version_id=v.id)):
        return
    raise Conflict(
        "version_in_use",
        f"version {v.version!r} of {model.name!r} has stored predictions, and this {what} "
        f"differs from the one they were monitored against; register a new version for a "
        f"retrained model, or send ?replace=true to replace the {what} of this version "
        "(recorded in the audit log as a replacement)",
        [Problem(f"predictions are stored for this version and its {what} would change",
                 field="replace")])


def delete_version(*, engine: Engine, model: str, version: str, force: bool) -> Deleted:
    """Refused (Conflict) while the version's predictions, their labels, summaries or
    results are stored, unless ``force``; its reference, weights and deltas always go with
    it."""
    with engine.begin() as conn:
        m = store.require_model(conn=conn, name=model)
        v = store.require_version(conn=conn, model=m, version=version)
        refuse_unless_forced(f"version {v.version!r} of {m.name!r}",
                             store.stored_data(conn=conn, model_id=m.id, version_id=v.id),
                             force)
        return Deleted(m.name, store.delete_version(conn=conn, model=m, version=v), v.version)
