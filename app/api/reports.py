"""Reference upload and the REST reports."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.auth import auth_responses, scoped
from app.api.body import content_type, upload_file
from app.api.deps import EngineDep, ProfilesDep, SettingsDep
from app.api.schemas import ErrorBody
from app.evaluation import reports
from app.evaluation.windows import repeatable_read
from app.ingest import reference, weights

router = APIRouter(prefix="/v1/models", tags=["reports"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"GET": "read", "POST": "admin"}))])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)
}
W = {"window_start": "2026-11-23T09:00:00+00:00", "window_end": "2026-11-23T10:00:00+00:00"}
EXAMPLES: dict[str, Any] = {
    "reference": {"model": "fraud", "version": "v2", "n_rows": 5000,
                  "features": {"amount": {"n_valid": 4990, "n_missing": 10, "bins": 11}},
                  "prediction": True, "ignored_columns": ["row_id"], "missing_columns": []},
    "weights": {"model": "fraud", "version": "v2", "tensors": 2, "predecessor": "v1",
                "overall": {"name": "(overall)", "count": 10, "zeros": 4, "sparsity": 0.4,
                            "l1": 3.1, "l2": 1.4},
                "delta_vs_predecessor": {"sparsity_change_pp": 20.0,
                                         "l1_relative_change": -0.35},
                "features": {"tensor": "coef", "axis": 1, "nonzero": 1, "features": [
                    {"feature": "amount", "l1": 2.4, "l2": 2.4, "zero": False,
                     "importance": 1.0},
                    {"feature": "country", "l1": 0.0, "l2": 0.0, "zero": True,
                     "importance": 0.0}]},
                "features_vs_predecessor": {"nonzero_base": 2, "nonzero_candidate": 1,
                                            "zeroed": ["country"], "revived": [],
                                            "zeroed_top": [{"feature": "country",
                                                            "importance_base": 0.3,
                                                            "rank_base": 2}],
                                            "top_k": 5, "shifts": []}},
    "drift": {"model": "fraud", "task": "binary_classification", **W, "empty": False,
              "versions": [{"version": "v2", "n": 5120,
                            "reference": {"source": "upload", "n_rows": 5000},
                            "features": [{"feature": "amount", "type": "numeric",
                                          "psi": 0.31, "psi_band": "major",
                                          "ks_statistic": 0.18, "ks_pvalue": 1.2e-40,
                                          "ks_pvalue_adjusted": 2.4e-40, "missing_rate": 0.0,
                                          "n_reference": 5000, "n_current": 5120,
                                          "decision": "critical", "importance": 0.12}],
                            "prediction": {"feature": "prediction", "psi": 0.04,
                                           "decision": "ok"}}]},
    "calibration": {"model": "fraud", **W, "empty": False, "versions": [
        {"version": "v2", "predictions": 5120, "n": 3900, "ece": 0.031, "mce": 0.08,
         "brier": 0.061, "label_coverage": 0.76, "decision": "ok",
         "bins": [{"lower": 0.0, "upper": 0.1, "count": 2100, "mean_confidence": 0.03,
                   "observed_rate": 0.035}]}]},
    "cohorts": {"model": "fraud", **W, "empty": False, "versions": [
        {"version": "v2", "n": 5120, "cohort_keys": {"region": {
            "overall": {"n": 3900, "error_rate": 0.06},
            "cohorts": [{"cohort": "eu", "n": 2000, "error_rate": 0.21, "ci_low": 0.19,
                         "ci_high": 0.23, "delta_error_rate": 0.15, "decidable": True,
                         "decision": "warning"}]}},
         "generalization_gap": {
             "overall": {"n": 3900, "validation_error": 0.05, "production_error": 0.06,
                         "ci_low": 0.053, "ci_high": 0.068, "gap": 0.01,
                         "lines": {"warning": 0.07, "critical": 0.1},
                         "gate": "interval_lower_bound", "decision": "ok",
                         "method": "error rate, Wilson 95% interval"},
             "cohorts": [{"cohort_key": "region", "cohort": "eu", "n": 2000,
                          "validation_error": 0.08, "production_error": 0.21,
                          "ci_low": 0.19, "ci_high": 0.23, "gap": 0.13,
                          "lines": {"warning": 0.1, "critical": 0.13},
                          "gate": "interval_lower_bound", "decision": "critical",
                          "method": "error rate, Wilson 95% interval"}]}}]},
    "history": {"model": "fraud", "metric": "feature_psi", "points": [
        {"version": "v2", "subject": "amount", **W, "n": 5120, "value": 0.31,
         "decision": "critical", "method": "psi eps=1e-4 ref=upload"}],
        "next_cursor": None},
    "compare": {"model": "fraud",
                "base": {"version": "v1", "regularization": {"type": "l1", "lambda": 0.001}},
                "candidate": {"version": "v2", "regularization": {"type": "l1", "lambda": 0.01}},
                "overall": {"name": "(overall)", "sparsity_change_pp": 20.0,
                            "l1_relative_change": -0.35, "l2_relative_change": -0.2},
                "tensors": [], "added": [], "removed": [], "reshaped": [],
                "features": {"nonzero_base": 2, "nonzero_candidate": 1, "zeroed": ["country"],
                             "revived": [], "zeroed_top": [{"feature": "country",
                                                            "importance_base": 0.3,
                                                            "rank_base": 2}], "top_k": 5,
                             "shifts": [{"feature": "country", "importance_base": 0.3,
                                         "importance_candidate": 0.0, "change": -0.3}]},
                "checks": {"sparsity_jump": {"value": 0.2, "lines": {"warning": 0.1,
                                                                      "critical": 0.2},
                                             "decision": "warning"},
                           "norm_jump": {"value": 0.35, "norm": "l1",
                                         "lines": {"warning": 0.5}, "decision": "ok"}}},
}


def ok(name: str) -> dict[int | str, dict[str, Any]]:
    return {**ERRORS, 200 if name not in ("reference", "weights") else 201: {
        "content": {"application/json": {"example": EXAMPLES[name]}}}}


Start = Annotated[datetime | None, Query(description="window start (ISO 8601); default: the "
                                         "latest window the jobs computed")]
End = Annotated[datetime | None, Query(description="window end (ISO 8601, exclusive)")]
Version = Annotated[str | None, Query(description="one version; default: every version with "
                                      "traffic in the window")]


@router.post(
    "/{model}/versions/{version}/reference",
    status_code=201,
    responses=ok("reference"),
    summary="Upload a version's reference data set (JSON records, CSV or Parquet)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"example": {"records": [{"amount": 12.5, "country": "DE",
                                                      "score": 0.1}]}},
        "text/csv": {"example": "amount,country,score\n12.5,DE,0.1\n"},
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    }}},
)
async def upload_reference(model: str, version: str, request: Request, engine: EngineDep,
                           settings: SettingsDep) -> JSONResponse:
    return await _upload(
        request, engine, model, version, settings.reference_max_bytes, reference.ACCEPTED,
        "application/json, text/csv or application/vnd.apache.parquet",
        lambda path, ctype: reference.store_reference(
            engine=engine, settings=settings, model_name=model, version=version, path=path,
            ctype=ctype))


def _run(engine: Any, fn: Any) -> Any:
    def go() -> Any:
        # one snapshot: a window's summaries and any rows summarised again are read together
        with repeatable_read(engine.connect()) as conn, conn.begin():
            return fn(conn)
    return run_in_threadpool(go)


async def _upload(request: Request, engine: Any, model: str, version: str, limit: int,
                  accepted: tuple[str, ...], hint: str,
                  process: Callable[[Path, str], dict[str, Any]]) -> JSONResponse:
    """404 for an unknown model or version before reading anything, then the body streamed
    to a temporary file and processed in a worker thread."""
    ctype = content_type(request)
    await _run(engine, lambda c: weights.model_version(c, model, version))
    async with upload_file(request, limit, accepted, hint,
                           request.app.state.upload_slots) as path:
        body = await run_in_threadpool(process, path, ctype)
    return JSONResponse(body, status_code=201)


@router.get("/{model}/reports/drift", responses=ok("drift"),
            summary="Per-feature PSI, KS and missing rate against the reference")
async def drift(model: str, engine: EngineDep, settings: SettingsDep, profiles: ProfilesDep,
                version: Version = None, start: Start = None,
                end: End = None) -> dict[str, Any]:
    return await _run(engine, lambda c: reports.drift_report(
        c, settings, reports.scope(c, settings, model, version, start, end), profiles))


@router.get("/{model}/reports/calibration", responses=ok("calibration"),
            summary="ECE, MCE, Brier and reliability bins over the labeled predictions")
async def calibration(model: str, engine: EngineDep, settings: SettingsDep,
                      version: Version = None, start: Start = None, end: End = None,
                      bins: Annotated[int | None, Query(ge=2, le=100)] = None) -> dict[str, Any]:
    return await _run(engine, lambda c: reports.calibration_report(
        c, settings, reports.scope(c, settings, model, version, start, end, needs_labels=True),
        bins))


@router.get("/{model}/reports/cohorts", responses=ok("cohorts"),
            summary="Error per cohort with 95% Wilson intervals and the delta to overall; "
                    "production error against the version's registered validation error")
async def cohorts(model: str, engine: EngineDep, settings: SettingsDep, version: Version = None,
                  start: Start = None, end: End = None) -> dict[str, Any]:
    return await _run(engine, lambda c: reports.cohorts_report(
        c, settings, reports.scope(c, settings, model, version, start, end,
                                   needs_labels=True)))


@router.get("/{model}/history", responses=ok("history"),
            summary="The stored time series of one metric")
async def history(model: str, engine: EngineDep, settings: SettingsDep,
                  metric: Annotated[str, Query(description="e.g. feature_psi, calibration_ece")],
                  feature: str | None = None,
                  cohort: Annotated[str | None, Query(description="cohort_key=value")] = None,
                  version: Version = None, start: Start = None,
                  end: End = None,
                  limit: Annotated[int, Query(ge=1, le=10_000,
                                              description="points per page")] = 10_000,
                  cursor: Annotated[str | None, Query(
                      max_length=2048, description="next_cursor of the previous page")] = None,
                  ) -> dict[str, Any]:
    return await _run(engine, lambda c: reports.history_report(
        c, settings, model, metric, feature, cohort, version, start, end, limit, cursor))


@router.post(
    "/{model}/versions/{version}/weights",
    status_code=201,
    responses=ok("weights"),
    summary="Upload a version's weights (.npz or .safetensors) or per-tensor summaries",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"example": {"tensors": [
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
) -> JSONResponse:
    def process(path: Path, ctype: str) -> dict[str, Any]:
        eps = settings.weights_zero_eps
        summary = weights.summary_from_upload(path, ctype, eps)
        names = weights.model_features(engine=engine, model_name=model, version=version)
        per_feature, skipped = weights.features_from_upload(path, ctype, summary, names,
                                                            feature_tensor, feature_axis, eps)
        return weights.store_weights(engine=engine, model_name=model, version=version,
                                     summary=summary, features=per_feature,
                                     features_reason=skipped)

    return await _upload(request, engine, model, version, settings.weights_max_bytes,
                         weights.ACCEPTED, "application/octet-stream (.npz or .safetensors) "
                         "or application/json summaries", process)


@router.get("/{model}/versions/compare", responses=ok("compare"),
            summary="Weight norms and sparsity of two versions: per tensor, overall, per feature")
async def compare_versions(model: str, engine: EngineDep, settings: SettingsDep,
                           base: Annotated[str, Query(description="the earlier version")],
                           candidate: Annotated[str, Query(description="the later version")]
                           ) -> dict[str, Any]:
    return await _run(engine, lambda c: weights.compare(conn=c, settings=settings,
                                                        model_name=model, base=base,
                                                        candidate=candidate))
