"""A version's reference profile as a document: what a producer of summaries elsewhere (the
summarizing client, a lake backfill, a Spark job) builds its drift summaries on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from app.evaluation.packing import FORMAT
from app.evaluation.summaries import profile_key
from app.settings import Settings
from app.storage import profiles as profile_store
from app.storage import registry


def profile_document(*, engine: Engine, settings: Settings, model_name: str, version: str,
                     now: datetime) -> dict[str, Any]:
    """The model's shape, the version's current profile and its key (both null while it has
    no reference: outcome summaries need none), and the bucket length summaries must use."""
    with engine.connect() as conn:
        model = registry.require_model(conn=conn, name=model_name)
        v = registry.require_version(conn=conn, model=model, version=version)
        shaped = registry.version_model(conn=conn, model=model, version_id=v.id)
        stored = profile_store.get_profile(conn=conn, version_id=v.id)
    return {"model": model.name, "version": v.version, "format": FORMAT,
            "bucket_seconds": settings.job_interval_seconds,
            "task": shaped.task, "features": shaped.features,
            "cohort_keys": list(shaped.cohort_keys), "classes": list(shaped.classes or []),
            "profile_key": None if stored is None else profile_key(
                v.id, stored["created_at"].isoformat()),
            "profile": None if stored is None else stored["profile"],
            "as_of": now.isoformat()}
