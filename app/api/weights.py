"""A version's weights: the upload (.npz, .safetensors or per-tensor summaries) and the
comparison of two versions' weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from app.api.auth import auth_responses, scoped
from app.api.deps import (
    EngineDep,
    ReplaceQuery,
    SettingsDep,
    error_responses,
    in_snapshot,
    receive_upload,
)
from app.registry import weights

router = APIRouter(prefix="/v1/models", tags=["reports"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"GET": "read", "POST": "admin"}))])
ERRORS = error_responses(400, 404, 413, 415, 422, 503)
STORED: dict[str, Any] = {
    "model": "fraud", "version": "v2", "tensors": 2, "predecessor": "v1",
    "overall": {"name": "(overall)", "count": 10, "zeros": 4, "sparsity": 0.4,
                "l1": 3.1, "l2": 1.4},
    "delta_vs_predecessor": {"sparsity_change_pp": 20.0, "l1_relative_change": -0.35},
    "features": {"tensor": "coef", "axis": 1, "nonzero": 1, "features": [
        {"feature": "amount", "l1": 2.4, "l2": 2.4, "zero": False, "importance": 1.0},
        {"feature": "country", "l1": 0.0, "l2": 0.0, "zero": True, "importance": 0.0}]},
    "features_vs_predecessor": {"nonzero_base": 2, "nonzero_candidate": 1,
                                "zeroed": ["country"], "revived": [],
                                "zeroed_top": [{"feature": "country", "importance_base": 0.3,
                                                "rank_base": 2}],
                                "top_k": 5, "shifts": []},
}
COMPARED: dict[str, Any] = {
    "model": "fraud",
    "base": {"version": "v1", "regularization": {"type": "l1", "lambda": 0.001}},
    "candidate": {"version": "v2", "regularization": {"type": "l1", "lambda": 0.01}},
    "overall": {"name": "(overall)", "sparsity_change_pp": 20.0,
                "l1_relative_change": -0.35, "l2_relative_change": -0.2},
    "tensors": [], "added": [], "removed": [], "reshaped": [],
    "features": {"nonzero_base": 2, "nonzero_candidate": 1, "zeroed": ["country"],
                 "revived": [], "zeroed_top": [{"feature": "country", "importance_base": 0.3,
                                                "rank_base": 2}], "top_k": 5,
                 "shifts": [{"feature": "country", "importance_base": 0.3,
                             "importance_candidate": 0.0, "change": -0.3}]},
    "checks": {"sparsity_jump": {"value": 0.2, "lines": {"warning": 0.1, "critical": 0.2},
                                 "decision": "warning"},
               "norm_jump": {"value": 0.35, "norm": "l1", "lines": {"warning": 0.5},
                             "decision": "ok"}},
}


@router.post(
    "/{model}/versions/{version}/weights",
    status_code=201,
    responses={**ERRORS, **error_responses(409),
               201: {"content": {"application/json": {"example": STORED}}}},
    summary="Upload a version's weights (.npz or .safetensors) or per-tensor summaries",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {
            "type": "object", "required": ["tensors"], "properties": {"tensors": {
                "type": "array", "items": {"type": "object", "additionalProperties": True,
                                           "required": ["name"], "properties": {
                                               "name": {"type": "string"},
                                               "shape": {"type": "array",
                                                         "items": {"type": "integer"}}}}}}},
            "example": {"tensors": [
            {"name": "dense/kernel", "shape": [4, 2], "count": 8, "zeros": 2, "l1": 3.5,
             "l2": 1.9, "max_abs": 1.1, "mean": 0.05, "std": 0.6}]}},
    }}},
)
async def upload_weights(
    model: str, version: str, request: Request, engine: EngineDep, settings: SettingsDep,
    feature_tensor: Annotated[str | None, Query(
        min_length=1, max_length=512,
        description="the tensor one of whose axes is indexed by the model's features (in "
                    "their registered order); default: 'coef' (last axis) or "
                    "'layer0/kernel' (axis 0), as the client's scikit-learn helper names them",
    )] = None,
    feature_axis: Annotated[int | None, Query(
        ge=-32, le=31, description="that axis (negative counts from the end); may be left "
                                   "out for a 1-D tensor")] = None,
    replace: ReplaceQuery = False,
) -> JSONResponse:
    """A .npz or .safetensors file (application/octet-stream, streamed to disk and read one tensor
    at a time) or per-tensor summaries as JSON. Compared with the previous version that has
    weights: L1, L2 and sparsity per tensor and overall; with feature_tensor and feature_axis (a
    scikit-learn coef needs neither), per-feature weights and importance too."""
    def process(path: Path, ctype: str) -> dict[str, Any]:
        return weights.upload_weights(engine=engine, settings=settings, model_name=model,
                                      version=version, path=path, ctype=ctype,
                                      feature_tensor=feature_tensor, feature_axis=feature_axis,
                                      replace=replace)

    return await receive_upload(request, engine, model, version, "weights_max_bytes",
                                weights.ACCEPTED, "application/octet-stream (.npz or "
                                ".safetensors) or application/json summaries", process)


@router.get("/{model}/versions/compare",
            responses={**ERRORS, 200: {"content": {"application/json": {"example": COMPARED}}}},
            summary="Weight norms and sparsity of two versions: per tensor, overall, per feature")
async def compare_versions(model: str, engine: EngineDep, settings: SettingsDep,
                           base: Annotated[str, Query(description="the earlier version")],
                           candidate: Annotated[str, Query(description="the later version")]
                           ) -> dict[str, Any]:
    """base against candidate: the relative change of L1 and L2, the sparsity change in percentage
    points per tensor and overall, the tensors added, removed or reshaped, the sparsity and norm
    jump checks, and per feature the importance in each and which features the candidate zeroed
    or revived."""
    return await in_snapshot(engine, lambda c: weights.compare(
        conn=c, settings=settings, model_name=model, base=base, candidate=candidate))
