"""Prediction and label ingest: read the body within limits, hand it to app/ingest, and hand
what ingest returns (or the refusal it raises) to the service metrics: ingest counts nothing
itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response

from app.api.auth import admit_batch, auth_responses, scoped
from app.api.body import read_body
from app.api.deps import body_doc
from app.api.schemas import ErrorBody, LabelBatch, LabelResult, PredictionBatch, PredictionResult
from app.ingest import service
from app.ingest.outcome import LabelsStored, PredictionsStored, Refused
from app.observability.metrics import ServiceMetrics

router = APIRouter(prefix="/v1", tags=["ingest"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"POST": "ingest"}))])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)
}

Outcome = TypeVar("Outcome")


def _counted(count: Callable[[Outcome], None], metrics: ServiceMetrics,
             ingest: Callable[[], Outcome]) -> Outcome:
    """Run an ingest call (in the worker thread, where the metrics are counted too, off the
    event loop) and count its outcome, or its refusal before answering with the error."""
    try:
        outcome = ingest()
    except Refused as refused:
        metrics.count_rejected(refused.rejected)
        raise refused.error from None
    count(outcome)
    return outcome


@router.post(
    "/predictions",
    response_model=PredictionResult,
    responses=ERRORS,
    openapi_extra=body_doc(PredictionBatch),
    summary="Log a batch of predictions (atomic, idempotent per model + prediction_id)",
)
async def post_predictions(request: Request) -> Response:
    """Up to 10,000 records, stored whole or not at all: a bad batch is a 422 naming every bad
    record's index and field. A record already stored (same model and prediction_id) is a no-op
    counted in duplicates, so a client may retry a batch. The body may be gzip-compressed
    (Content-Encoding: gzip). Needs the ingest scope for the records' models."""
    body = await read_body(request)  # decoded in the worker thread
    # the app's state read here, not through dependencies: FastAPI's resolving four of them
    # cost about 4% of this route's CPU (BENCHMARKS.md, "What a 100-record request costs")
    state = request.app.state
    metrics: ServiceMetrics = state.metrics
    result: PredictionsStored = await state.ingest_slots.run(
        _counted, metrics.count_predictions, metrics,
        lambda: service.ingest_predictions(engine=state.engine, partitions=state.partitions,
                                           settings=state.settings, body=body,
                                           profiles=state.profiles, schema_cache=state.schemas,
                                           authorize=lambda names: admit_batch(request, names)))
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
async def post_labels(request: Request) -> dict[str, int]:
    """Each label joins its prediction by model and prediction_id; one that comes before its
    prediction waits (pending) and joins it when the prediction arrives. A prediction keeps the
    first label it is sent; a repeat is counted in duplicates. Needs the ingest scope."""
    body = await read_body(request)  # decoded in the worker thread
    state = request.app.state  # as post_predictions reads it
    metrics: ServiceMetrics = state.metrics
    result: LabelsStored = await state.ingest_slots.run(
        _counted, metrics.count_labels, metrics,
        lambda: service.ingest_labels(engine=state.engine, settings=state.settings, body=body,
                                      authorize=lambda names: admit_batch(request, names),
                                      schema_cache=state.schemas))
    return {"matched": result.matched, "pending": result.pending, "duplicates": result.duplicates}
