"""Prediction and label ingest: read the body within limits, hand it to app/ingest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.auth import admit_batch, auth_responses, scoped
from app.api.body import read_body
from app.api.deps import EngineDep, PartitionsDep, ProfilesDep, SettingsDep, body_doc, read_batch
from app.api.schemas import ErrorBody, LabelBatch, LabelResult, PredictionBatch, PredictionResult
from app.ingest import service

router = APIRouter(prefix="/v1", tags=["ingest"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"POST": "ingest"}))])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)
}


@router.post(
    "/predictions",
    response_model=PredictionResult,
    responses=ERRORS,
    openapi_extra=body_doc(PredictionBatch),
    summary="Log a batch of predictions (atomic, idempotent per model + prediction_id)",
)
async def post_predictions(request: Request, engine: EngineDep, partitions: PartitionsDep,
                           settings: SettingsDep, profiles: ProfilesDep) -> Response:
    body = await read_body(request, settings.max_body_bytes)  # decoded in the worker thread
    result = await run_in_threadpool(
        lambda: service.ingest_predictions(engine=engine, partitions=partitions,
                                           settings=settings, body=body, profiles=profiles,
                                           schema_cache=request.app.state.schemas,
                                           authorize=lambda names: admit_batch(request, names),
                                           metrics=request.app.state.metrics)
    )
    # Two integers: written directly, not validated and serialised through the response model
    # (which documents them) on the hottest route.
    return Response(b'{"accepted":%d,"duplicates":%d}' % (result.accepted, result.duplicates),
                    media_type="application/json")


@router.post(
    "/labels",
    response_model=LabelResult,
    responses=ERRORS,
    openapi_extra=body_doc(LabelBatch),
    summary="Log ground-truth labels, joined to predictions by model + prediction_id",
)
async def post_labels(request: Request, engine: EngineDep,
                      settings: SettingsDep) -> dict[str, int]:
    body = await read_batch(request, settings)
    result = await run_in_threadpool(
        lambda: service.ingest_labels(engine=engine, settings=settings, body=body,
                                      authorize=lambda names: admit_batch(request, names),
                                      metrics=request.app.state.metrics)
    )
    return {"matched": result.matched, "pending": result.pending, "duplicates": result.duplicates}
