"""Which reference a version's windows are compared with: its uploaded reference profile or,
without one, a baseline of its own early traffic (stated in every report that uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from app.evaluation.profiles import ProfileCache, profile_from_rows
from app.evaluation.summaries import CompiledProfile, ModelShape
from app.evaluation.windows import rows_from_db
from app.settings import Settings
from app.storage import observations as obs
from app.storage import profiles as profile_store
from app.storage import registry
from app.storage.registry import ModelRow


@dataclass(frozen=True)
class Reference:
    profile: CompiledProfile | None
    info: dict[str, Any]


def profile_options(settings: Settings) -> dict[str, Any]:
    return {"n_bins": settings.reference_bins, "sample_size": settings.reference_sample_size}


def reference_for(*, conn: Connection, model: ModelRow, version_id: int, settings: Settings,
                  now: datetime, profiles: ProfileCache,
                  store_baseline: bool = False) -> Reference:
    """The compiled profile a version is compared with, and a description of it.

    Without a stored profile, the baseline is fitted from the version's first traffic
    (bounded: at most ``baseline_max_predictions`` rows) and stored once complete; until
    then it is provisional and its key matches no stored summary, so windows compared with
    it are summarised from their rows, of which there are fewer than that bound."""
    stored = profile_store.profile_info(conn=conn, version_id=version_id)
    if stored is not None:
        info = {"source": stored["source"], "n_rows": stored["n_rows"],
                "created_at": stored["created_at"].isoformat()}
        if stored["source"] == "baseline":
            full = profile_store.get_profile(conn=conn, version_id=version_id) or {}
            info.update(full.get("profile", {}).get("baseline", {}))
        return Reference(profiles.get(conn, [version_id]).get(version_id), info)
    model = registry.version_model(conn=conn, model=model, version_id=version_id)
    t0 = obs.first_prediction_time(conn=conn, model_id=model.id, version_id=version_id)
    if t0 is None:
        return Reference(None, {"source": "none",
                                "reason": "no reference uploaded and no traffic yet"})
    end = t0 + timedelta(seconds=settings.baseline_seconds)
    nth = obs.nth_prediction_time(conn=conn, model_id=model.id, version_id=version_id,
                                  start=t0, n=settings.baseline_max_predictions)
    if nth is not None:
        end = min(end, nth + timedelta(microseconds=1))
    complete = end <= now
    db_rows = obs.load_rows(conn=conn, model_id=model.id, version_id=version_id, start=t0,
                            end=min(end, now), limit=settings.baseline_max_predictions)
    rows = rows_from_db(ModelShape.of(model), db_rows)
    profile = profile_from_rows(model, rows, **profile_options(settings))
    baseline = {"window_start": t0.isoformat(), "window_end": min(end, now).isoformat(),
                "complete": complete}
    profile["baseline"] = baseline
    info = {"source": "baseline", "n_rows": rows.n, **baseline,
            "note": "no reference uploaded: compared with this version's own first "
                    f"{settings.baseline_seconds / 3600:g} h or "
                    f"{settings.baseline_max_predictions} predictions"}
    if complete and store_baseline:
        profile_store.put_profile(conn=conn, model_id=model.id, version_id=version_id,
                                  source="baseline", n_rows=rows.n, profile=profile,
                                  replace=False)
        return Reference(profiles.get(conn, [version_id]).get(version_id), info)
    return Reference(CompiledProfile.compile(profile, "provisional"), info)
