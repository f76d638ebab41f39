"""Reference profiles of versions: an uploaded reference's or a baseline's binned profile,
one per version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from app.storage.db import as_utc
from app.storage.tables import reference_profiles


def get_profile(*, conn: Connection, version_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(reference_profiles)
                       .where(reference_profiles.c.version_id == version_id)).first()
    if row is None:
        return None
    return {"source": row.source, "n_rows": row.n_rows, "profile": row.profile,
            "created_at": as_utc(row.created_at)}


def profile_info(*, conn: Connection, version_id: int) -> dict[str, Any] | None:
    """A stored profile's source, rows and time, without reading the profile itself (it
    holds the reference's sample: the larger part of a profile to read and decode)."""
    r = reference_profiles
    row = conn.execute(select(r.c.source, r.c.n_rows, r.c.created_at)
                       .where(r.c.version_id == version_id)).first()
    if row is None:
        return None
    return {"source": row.source, "n_rows": row.n_rows, "created_at": as_utc(row.created_at)}


def profile_stamps(*, conn: Connection, version_ids: set[int]) -> dict[int, datetime]:
    """When each version's stored profile was stored (versions without one are absent)."""
    if not version_ids:
        return {}
    r = reference_profiles
    q = select(r.c.version_id, r.c.created_at).where(r.c.version_id.in_(sorted(version_ids)))
    return {vid: as_utc(ts) for vid, ts in conn.execute(q)}


def put_profile(*, conn: Connection, model_id: int, version_id: int, source: str, n_rows: int,
                profile: dict[str, Any], replace: bool = True) -> None:
    """Store a version's reference profile; an upload replaces whatever was there, a
    baseline (``replace=False``) never replaces anything."""
    if replace:
        conn.execute(delete(reference_profiles)
                     .where(reference_profiles.c.version_id == version_id))
    elif get_profile(conn=conn, version_id=version_id) is not None:
        return
    conn.execute(insert(reference_profiles).values(
        version_id=version_id, model_id=model_id, source=source, n_rows=n_rows,
        profile=profile, created_at=datetime.now(UTC)))
