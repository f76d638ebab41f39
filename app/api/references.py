"""A version's reference data set: the upload (JSON records, CSV or Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from app.api.auth import auth_responses, scoped
from app.api.deps import EngineDep, ReplaceQuery, SettingsDep, error_responses, receive_upload
from app.registry import reference_data

router = APIRouter(prefix="/v1/models", tags=["reports"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"GET": "read", "POST": "admin"}))])
STORED: dict[str, Any] = {
    "model": "fraud", "version": "v2", "n_rows": 5000, "warnings": [],
    "features": {"amount": {"n_valid": 4990, "n_missing": 10, "bins": 11}},
    "prediction": True, "ignored_columns": ["row_id"], "missing_columns": [],
}


@router.post(
    "/{model}/versions/{version}/reference",
    status_code=201,
    responses={**error_responses(400, 404, 409, 413, 415, 422, 503),
               201: {"content": {"application/json": {"example": STORED}}}},
    summary="Upload a version's reference data set (JSON records, CSV or Parquet)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["records"], "properties": {"records": {
                "type": "array", "items": {"type": "object", "additionalProperties": True}}}},
            "example": {"records": [{"amount": 12.5, "country": "DE", "score": 0.1}]}},
        "text/csv": {"schema": {"type": "string"},
                     "example": "amount,country,score\n12.5,DE,0.1\n"},
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    }}},
)
async def upload_reference(model: str, version: str, request: Request, engine: EngineDep,
                           settings: SettingsDep, replace: ReplaceQuery = False) -> JSONResponse:
    """The sample drift is measured against, on bins fitted once: one column per feature plus the
    prediction (score, value or predicted_label); other columns are ignored and listed, a
    missing feature column is a 422 naming it. A reference under MODELMON_REFERENCE_MIN_ROWS
    rows is stored with a warning. Once predictions of the version are stored, a different
    reference is a 409 version_in_use unless sent with replace=true."""
    def process(path: Path, ctype: str) -> dict[str, Any]:
        return reference_data.store_reference(engine=engine, settings=settings,
                                              model_name=model, version=version, path=path,
                                              ctype=ctype, replace=replace)

    return await receive_upload(
        request, engine, model, version, "reference_max_bytes",
        reference_data.ACCEPTED, "application/json, text/csv or application/vnd.apache.parquet",
        process)
