"""Summaries built where the predictions are: the version's profile to build them on
(GET), and the upload of bucket summaries (POST /v1/summaries). docs/summaries.md documents
both and the packed format."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, Field, StringConstraints

from app.api.auth import admit_batch, auth_responses, check_models, scoped
from app.api.deps import (
    EngineDep,
    ProfilesDep,
    SettingsDep,
    body_doc,
    error_responses,
    read_model,
)
from app.api.errors import ApiError
from app.api.schemas import Name, Strict
from app.errors import Problem
from app.evaluation.packing import FORMAT
from app.ingest import imports
from app.registry import profiles as profile_reads

router = APIRouter(prefix="/v1", tags=["ingest"], responses=auth_responses())
SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$"
MAX_SUMMARIES = 10_000
PROFILE: dict[str, Any] = {
    "model": "fraud", "version": "v2", "format": 1, "bucket_seconds": 300.0,
    "task": "binary_classification",
    "features": [{"name": "amount", "type": "numeric"},
                 {"name": "country", "type": "categorical"}],
    "cohort_keys": ["region"], "classes": ["legit", "fraud"],
    "profile_key": "3f2a9c0d1e4b5a67",
    "profile": {"n_rows": 5000, "features": {"country": {
        "type": "categorical", "binning": {"kind": "categorical", "categories": ["DE", "FR"]},
        "counts": [3000, 1990, 0, 10], "n_valid": 4990, "n_missing": 10}},
        "prediction": None},
    "as_of": "2026-12-06T10:07:12+00:00"}


class SummaryIn(Strict):
    bucket_start: AwareDatetime = Field(description=(
        "Start of the bucket the summary counts: a multiple of the service's bucket length "
        "(MODELMON_JOB_INTERVAL_SECONDS) since the epoch, from the predictions' own "
        "timestamps."))
    kind: Literal["outcome", "drift"]
    n: int = Field(ge=0, le=10**12, description="Predictions the summary counts.")
    payload: str = Field(max_length=64 * 1024 * 1024, description=(
        "The packed summary (docs/summaries.md), base64."))


class SummaryUpload(Strict):
    format: Literal[1] = Field(default=FORMAT, description="Version of the packed format.")
    source: Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)] = Field(description=(
        "Who summarised: a stable id per producer (a host, a backfill job, a Spark job)."))
    sequence: int = Field(ge=0, le=2**63 - 1, description=(
        "The producer's number for this upload's content: the same (source, sequence, "
        "bucket, kind) is stored once, however often it is sent."))
    model: Name
    version: Name
    profile: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        default=None, description="The profile key the drift summaries were built on.")
    bucket_seconds: float = Field(gt=0, description="The bucket length the summaries use.")
    summaries: list[SummaryIn] = Field(min_length=1, max_length=MAX_SUMMARIES)

    model_config = {"json_schema_extra": {"example": {
        "format": 1, "source": "edge-eu-17", "sequence": 42, "model": "fraud",
        "version": "v2", "profile": "3f2a9c0d1e4b5a67", "bucket_seconds": 300,
        "summaries": [{"bucket_start": "2026-12-06T10:05:00Z", "kind": "outcome", "n": 1200,
                       "payload": "WnicY2BgYGQAAQ=="}]}}}


def _upload(body: SummaryUpload) -> imports.Upload:
    out, problems = [], []
    for i, s in enumerate(body.summaries):
        try:
            raw = base64.b64decode(s.payload, validate=True)
        except (binascii.Error, ValueError):
            problems.append(Problem("payload is not base64", field="summaries", index=i))
            continue
        out.append(imports.Summary(s.bucket_start.astimezone(UTC), s.kind, s.n, raw))
    if problems:
        raise ApiError(422, "invalid_summaries", "the upload holds summaries that cannot be "
                       "read; nothing was stored", problems)
    return imports.Upload(body.source, body.sequence, body.model, body.version, body.profile,
                          body.bucket_seconds, out)


@router.post(
    "/summaries",
    responses={**error_responses(400, 403, 404, 409, 413, 415, 422, 503), 200: {
        "content": {"application/json": {"example": {
            "accepted": 1, "duplicates": 0, "predictions": 1200}}}}},
    openapi_extra=body_doc(SummaryUpload),
    summary="Import bucket summaries built elsewhere (idempotent per source, bucket, kind "
            "and sequence)",
    dependencies=[Depends(scoped({"POST": "ingest"}))],
)
async def post_summaries(request: Request, engine: EngineDep, settings: SettingsDep,
                         profiles: ProfilesDep) -> dict[str, int]:
    """Bucket summaries folded where the data lives (modelmon backfill, the Spark job,
    SummarizingMonitor), in the packed format of docs/summaries.md. Each is stored once per
    source, bucket, kind and sequence, so an upload sent again counts nothing twice."""
    body = await read_model(request, settings, SummaryUpload)
    upload = _upload(body)
    result = await request.app.state.ingest_slots.run(
        imports.import_summaries, engine=engine, settings=settings, profiles=profiles,
        upload=upload, authorize=lambda names: admit_batch(request, names))
    return {"accepted": result.accepted, "duplicates": result.duplicates,
            "predictions": result.predictions}


@router.get(
    "/models/{model}/versions/{version}/profile",
    responses={**error_responses(404, 503), 200: {"content": {"application/json": {
        "example": PROFILE}}}},
    summary="The version's reference profile, to build drift summaries on",
    dependencies=[Depends(scoped({"GET": "read"}))],
)
async def get_profile(model: str, version: str, request: Request, engine: EngineDep,
                      settings: SettingsDep) -> dict[str, Any]:
    """The reference's bins and categories as a summariser needs them, under the profile_key its
    drift summaries name; a new reference makes a new key."""
    check_models(request, [model])
    return await run_in_threadpool(profile_reads.profile_document, engine=engine,
                                   settings=settings, model_name=model, version=version,
                                   now=datetime.now(UTC))
