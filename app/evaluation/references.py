"""Which reference a version's windows are compared with: its uploaded reference profile or,
without one, a baseline of its own early traffic (stated in every report that uses it)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from app.evaluation.profiles import profile_from_window
from app.settings import Settings
from app.storage import observations as obs
from app.storage import results
from app.storage.registry import ModelRow


def profile_options(settings: Settings) -> dict[str, Any]:
    return {"n_bins": settings.reference_bins, "sample_size": settings.reference_sample_size}


def reference_for(*, conn: Connection, model: ModelRow, version_id: int, settings: Settings,
                  now: datetime, store_baseline: bool = False
                  ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(profile or None, description of the reference used)."""
    stored = results.get_profile(conn=conn, version_id=version_id)
    if stored is not None:
        info = {"source": stored["source"], "n_rows": stored["n_rows"],
                "created_at": stored["created_at"].isoformat()}
        if stored["source"] == "baseline":
            info.update(stored["profile"].get("baseline", {}))
        return stored["profile"], info
    t0 = obs.first_prediction_time(conn=conn, model_id=model.id, version_id=version_id)
    if t0 is None:
        return None, {"source": "none", "reason": "no reference uploaded and no traffic yet"}
    end = t0 + timedelta(seconds=settings.baseline_seconds)
    nth = obs.nth_prediction_time(conn=conn, model_id=model.id, version_id=version_id,
                                  start=t0, n=settings.baseline_max_predictions)
    if nth is not None:
        end = min(end, nth + timedelta(microseconds=1))
    complete = end <= now
    w = obs.load_window(conn=conn, model=model, version_id=version_id, start=t0,
                        end=min(end, now), limit=settings.baseline_max_predictions)
    profile = profile_from_window(model, w, **profile_options(settings))
    baseline = {"window_start": t0.isoformat(), "window_end": min(end, now).isoformat(),
                "complete": complete}
    profile["baseline"] = baseline
    if complete and store_baseline:
        results.put_profile(conn=conn, model_id=model.id, version_id=version_id,
                            source="baseline", n_rows=w.n, profile=profile, replace=False)
    return profile, {"source": "baseline", "n_rows": w.n, **baseline,
                     "note": "no reference uploaded: compared with this version's own first "
                             f"{settings.baseline_seconds / 3600:g} h or "
                             f"{settings.baseline_max_predictions} predictions"}
