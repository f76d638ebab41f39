"""Summaries built elsewhere, imported: POST /v1/summaries.

A model server, a lake backfill or a Spark job folds its predictions with the service's own
kernel (app/evaluation/fold.py) and sends the bucket summaries. Each summary is checked
against the model and the version's current profile (app/evaluation/imported.py), claimed
once in the ledger per (source, model, version, bucket, kind, sequence), and stored beside
the service's own summaries with origin IMPORTED: jobs, reports and /metrics read it like any
other. The whole upload is stored, or nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from app.errors import Conflict, Invalid, Problem
from app.evaluation.imported import checked_drift, checked_outcome
from app.evaluation.packing import PayloadError, pack_drift, pack_outcome
from app.evaluation.profiles import ProfileCache
from app.evaluation.summaries import CompiledProfile, ModelShape
from app.settings import Settings
from app.storage import imports as ledger
from app.storage import registry
from app.storage import summaries as store
from app.storage.imports import ImportKey
from app.storage.summaries import DRIFT, IMPORTED, OUTCOME, SummaryRow


@dataclass(frozen=True)
class Summary:
    bucket_start: datetime
    kind: str
    n: int
    payload: bytes


@dataclass(frozen=True)
class Upload:
    source: str
    sequence: int
    model: str
    version: str
    profile: str | None
    bucket_seconds: float
    summaries: list[Summary]


@dataclass(frozen=True)
class SummariesStored:
    accepted: int  # summaries stored by this upload
    duplicates: int  # summaries stored before (the same source, bucket, kind and sequence)
    predictions: int  # predictions the accepted outcome summaries count


def _where(i: int, problem: str) -> Problem:
    return Problem(problem, field="summaries", index=i)


def _refuse(problems: list[Problem]) -> Invalid:
    return Invalid("invalid_summaries", "the upload holds summaries that cannot be stored; "
                   "nothing was stored", problems)


def _check_times(upload: Upload, settings: Settings, now: datetime) -> list[Problem]:
    step = settings.job_interval_seconds
    if upload.bucket_seconds != step:
        return [Problem(f"buckets must be {step:g} s long (the service's job interval), "
                        f"not {upload.bucket_seconds:g} s", field="bucket_seconds")]
    earliest = now - timedelta(days=min(settings.max_past_days, settings.retention_days))
    latest = now + timedelta(seconds=settings.max_future_seconds)
    problems, seen = [], set()
    for i, s in enumerate(upload.summaries):
        ts = s.bucket_start.timestamp()
        if ts % step:
            problems.append(_where(i, f"bucket_start must be a multiple of {step:g} s since "
                                      "the epoch"))
        elif s.bucket_start + timedelta(seconds=step) <= earliest or s.bucket_start > latest:
            problems.append(_where(i, "bucket_start is outside the accepted time range "
                                      "(retention, clock skew)"))
        if (s.bucket_start, s.kind) in seen:
            problems.append(_where(i, "the upload holds this bucket and kind twice"))
        seen.add((s.bucket_start, s.kind))
    return problems


def _profile(conn: Any, profiles: ProfileCache, upload: Upload, version_id: int
             ) -> CompiledProfile | None:
    """The version's current profile, or 409 when drift summaries were built on another."""
    if not any(s.kind == DRIFT for s in upload.summaries):
        return None
    cp = profiles.get(conn, {version_id}).get(version_id)
    if cp is None or cp.key != upload.profile:
        current = None if cp is None else cp.key
        raise Conflict("stale_profile", f"the drift summaries were built on profile "
                       f"{upload.profile!r}; the version's current profile is {current!r}: "
                       "fetch it (GET .../profile) and summarise again; nothing was stored",
                       [Problem(f"current profile: {current}", field="profile")])
    return cp


def _checked(upload: Upload, shape: ModelShape, cp: CompiledProfile | None,
             max_bytes: int) -> list[bytes]:
    """Each summary's payload re-packed after its checks, or 422 naming every bad one."""
    out, problems = [], []
    for i, s in enumerate(upload.summaries):
        try:
            if s.kind == DRIFT:
                assert cp is not None
                out.append(pack_drift(checked_drift(s.payload, cp, s.n, max_bytes)))
            else:
                out.append(pack_outcome(checked_outcome(s.payload, shape, s.n, max_bytes)))
        except PayloadError as exc:
            problems.append(_where(i, str(exc)))
    if problems:
        raise _refuse(problems)
    return out


def import_summaries(*, engine: Engine, settings: Settings, profiles: ProfileCache,
                     upload: Upload, authorize: Callable[[list[Any]], None]
                     ) -> SummariesStored:
    authorize([upload.model])
    problems = _check_times(upload, settings, datetime.now(UTC))
    if problems:
        raise _refuse(problems)
    with engine.begin() as conn:
        model = registry.require_model(conn=conn, name=upload.model)
        version = registry.require_version(conn=conn, model=model, version=upload.version)
        shape = ModelShape.of(registry.version_model(conn=conn, model=model,
                                                     version_id=version.id))
        cp = _profile(conn, profiles, upload, version.id)
        payloads = _checked(upload, shape, cp, settings.summary_max_payload_bytes)
        keys = [(ImportKey(upload.source, model.id, version.id, s.bucket_start, s.kind,
                           upload.sequence), cp.key if s.kind == DRIFT and cp else "", s.n)
                for s in upload.summaries]
        claimed = ledger.claim(conn=conn, keys=keys)
        rows = [SummaryRow(version.id, s.bucket_start, s.kind, key[1], s.n, payload, IMPORTED)
                for s, key, payload in zip(upload.summaries, keys, payloads, strict=True)
                if key[0] in claimed]
        store.append(conn=conn, model_id=model.id, rows=rows)
    return SummariesStored(
        accepted=len(rows), duplicates=len(keys) - len(rows),
        predictions=sum(r.n for r in rows if r.kind == OUTCOME))
