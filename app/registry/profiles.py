"""A version's reference profile as a document: what a producer of summaries elsewhere (the
summarizing client, a lake backfill, a Spark job) builds its drift summaries on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from app.errors import not_found
from app.evaluation.packing import FORMAT
from app.evaluation.summaries import profile_key
from app.settings import Settings
from app.storage import profiles as profile_store
from app.storage import registry


def profile_document(*, engine: Engine, settings: Settings, model_name: str, version: str,
                     now: datetime) -> dict[str, Any]:
    """The model's shape, the version's current profile and its key, and the bucket length
    summaries must use; 404 when the version has no reference yet (outcome summaries need
    none)."""
    with engine.connect() as conn:
        model = registry.require_model(conn=conn, name=model_name)
        v = registry.require_version(conn=conn, model=model, version=version)
        shaped = registry.version_model(conn=conn, model=model, version_id=v.id)
        stored = profile_store.get_profile(conn=conn, version_id=v.id)
    if stored is None:
        raise not_found("no_profile", f"version {version[:128]!r} of {model.name!r} has no "
                        "reference profile yet: upload its reference first", "version")
    return {"model": model.name, "version": v.version, "format": FORMAT,
            "bucket_seconds": settings.job_interval_seconds,
            "task": shaped.task, "features": shaped.features,
            "cohort_keys": list(shaped.cohort_keys), "classes": list(shaped.classes or []),
            "profile_key": profile_key(v.id, stored["created_at"].isoformat()),
            "profile": stored["profile"], "as_of": now.isoformat()}
