"""Model and version registration and lookup: parse, call the registry, map the result to
its response schema. The rules themselves live in app/registry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.auth import auth_responses, check_models, scoped
from app.api.deps import EngineDep, SettingsDep, body_doc, error_responses, read_model
from app.api.schemas import (
    DeletedRead,
    MaintenanceCreate,
    MaintenanceRead,
    ModelCreate,
    ModelPatch,
    ModelRead,
    VersionCreate,
    VersionPatch,
    VersionRead,
    policy_overrides,
)
from app.evaluation import policy as model_policy
from app.registry import maintenance, models, versions
from app.registry.maintenance import Window
from app.registry.models import Deleted, RegisteredModel
from app.registry.versions import RegisteredVersion
from app.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["models"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"GET": "read", "POST": "admin",
                                                  "PATCH": "admin", "DELETE": "admin"}))])
ERRORS = error_responses(400, 404, 409, 413, 415, 422, 503)


def _model_read(model: RegisteredModel, settings: Settings) -> dict[str, Any]:
    row = model.row
    policy = {"overrides": row.policy,
              "effective": model_policy.effective(settings, row.policy).to_dict()}
    return ModelRead(**row.definition(), created_at=row.created_at, versions=model.versions,
                     policy=policy).model_dump(mode="json")


def _version_read(v: RegisteredVersion) -> dict[str, Any]:
    row = v.row
    return VersionRead(model=v.model, version=row.version, created_at=row.created_at,
                       registered_at=row.registered_at, metadata=row.metadata,
                       features=row.features).model_dump(mode="json")


@router.post(
    "",
    status_code=201,
    response_model=ModelRead,
    responses={200: {"model": ModelRead, "description": "identical model already registered"},
               **ERRORS},
    openapi_extra=body_doc(ModelCreate),
    summary="Register a model",
)
async def create_model(request: Request, engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    """201 for a new model; the identical definition again is a 200 no-op, a different one a 409.
    The features with their types, the cohort keys and, for classifiers, the classes (integers
    are stored as their decimal strings). Needs the admin scope."""
    spec = await read_model(request, settings, ModelCreate)
    check_models(request, [spec.name])
    model, created = await run_in_threadpool(
        models.create_model, engine=engine, settings=settings,
        definition=spec.model_dump(mode="json", exclude={"policy"}),
        policy=None if spec.policy is None else policy_overrides(spec.policy))
    return JSONResponse(_model_read(model, settings), status_code=201 if created else 200)


@router.get("", response_model=list[ModelRead], summary="List models")
def list_models(request: Request, engine: EngineDep, settings: SettingsDep
                ) -> list[dict[str, Any]]:
    """Every registered model with its definition, its number of versions and its policy."""
    principal = getattr(request.state, "principal", None)
    return [_model_read(m, settings) for m in models.list_models(engine=engine)
            if principal is None or principal.may_touch(m.row.name)]


@router.get("/{model}", response_model=ModelRead, responses=ERRORS,
            summary="Get a model, with its policy (overrides and effective values)")
def get_model(model: str, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    """The model's definition, its number of versions and its policy: the overrides set with PATCH
    and the effective values after the service-wide defaults (docs/policy.md). 404 for an
    unknown model."""
    return _model_read(models.get_model(engine=engine, name=model), settings)


@router.patch(
    "/{model}",
    response_model=ModelRead,
    responses=ERRORS,
    openapi_extra=body_doc(ModelPatch),
    summary="Replace a model's policy, or add cohort keys",
)
async def patch_model(model: str, request: Request, engine: EngineDep,
                      settings: SettingsDep) -> dict[str, Any]:
    """The policy sent replaces the stored one whole; the next job windows and every report
    apply it, and /metrics exports its paging and expected interval at the next scrape.
    Cohort keys sent extend the current list: new predictions may carry the new keys at once;
    summaries stored before simply lack them (a report over older windows shows the key with
    no cohorts)."""
    spec = await read_model(request, settings, ModelPatch)
    check_models(request, [model])
    patched = await run_in_threadpool(
        models.patch_model, engine=engine, settings=settings, name=model,
        policy=None if spec.policy is None else policy_overrides(spec.policy),
        cohort_keys=spec.cohort_keys)
    return _model_read(patched, settings)


@router.post(
    "/{model}/versions",
    status_code=201,
    response_model=VersionRead,
    responses={200: {"model": VersionRead, "description": "identical version already registered"},
               **ERRORS},
    openapi_extra=body_doc(VersionCreate),
    summary="Register a model version",
)
async def create_version(model: str, request: Request, engine: EngineDep,
                         settings: SettingsDep) -> JSONResponse:
    """201 for a new version; the identical one again is a 200 no-op, a different one a 409. The
    metadata carries the regularization, hyperparameters, artifact size and what training
    measured (losses, validation error, rows, parameters), exported as gauges; created_at, when
    the version was trained, defaults to the registration time."""
    spec = await read_model(request, settings, VersionCreate)
    version, created = await run_in_threadpool(
        versions.create_version, engine=engine, model=model, version=spec.version,
        created_at=spec.created_at,
        metadata=spec.metadata.model_dump(mode="json", by_alias=True, exclude_none=True),
        features=None if spec.features is None else [f.model_dump() for f in spec.features],
        maintenance_seconds=spec.maintenance_seconds)
    return JSONResponse(_version_read(version), status_code=201 if created else 200)


@router.get("/{model}/versions", response_model=list[VersionRead], responses=ERRORS,
            summary="List a model's versions, in registration order")
def list_versions(model: str, engine: EngineDep) -> list[dict[str, Any]]:
    """Each version with its metadata and its creation and registration times."""
    return [_version_read(v) for v in versions.list_versions(engine=engine, model=model)]


@router.get("/{model}/versions/{version}", response_model=VersionRead, responses=ERRORS,
            summary="One version of a model")
def get_version(model: str, version: str, engine: EngineDep) -> dict[str, Any]:
    """The version's metadata (regularization, hyperparameters, training figures) and its times.
    404 for an unknown model or version."""
    return _version_read(versions.get_version(engine=engine, model=model, version=version))


@router.patch(
    "/{model}/versions/{version}",
    response_model=VersionRead,
    responses=ERRORS,
    openapi_extra=body_doc(VersionPatch),
    summary="Set a version's training metadata, until its first prediction is stored",
)
async def patch_version(model: str, version: str, request: Request, engine: EngineDep,
                        settings: SettingsDep) -> dict[str, Any]:
    """The training figures sent ({"training": {...}}) replace the stored ones while no prediction
    of the version is stored; after its first one the answer is a 409 version_in_use."""
    spec = await read_model(request, settings, VersionPatch)
    check_models(request, [model])
    return _version_read(await run_in_threadpool(
        versions.set_training, engine=engine, model=model, version=version,
        training=spec.training.model_dump(mode="json", exclude_none=True)))


Force = Annotated[bool, Query(description="delete also when data is stored (predictions, "
                                        "labels, summaries, results): all of it goes")]


def _deleted(request: Request, deleted: Deleted) -> dict[str, Any]:
    """The response of a delete; the schema cache forgets the model, whose versions (or
    the model itself) are gone."""
    request.app.state.schemas.forget(deleted.model)
    if deleted.version is None:
        return {"model": deleted.model, "deleted": deleted.counts}
    return {"model": deleted.model, "version": deleted.version, "deleted": deleted.counts}


@router.delete("/{model}", response_model=DeletedRead, responses=ERRORS,
               summary="Delete a model, its versions and (with force) all its data")
def delete_model(model: str, request: Request, engine: EngineDep,
                 force: Force = False) -> dict[str, Any]:
    """Refused (409) while predictions, labels, summaries or results are stored, unless
    ``force``; versions, references, weights and maintenance windows always go with it."""
    check_models(request, [model])
    return _deleted(request, models.delete_model(engine=engine, name=model, force=force))


@router.delete("/{model}/versions/{version}", response_model=DeletedRead, responses=ERRORS,
               summary="Delete a version and (with force) all its data")
def delete_version(model: str, version: str, request: Request, engine: EngineDep,
                   force: Force = False) -> dict[str, Any]:
    """Refused (409) while the version's predictions, their labels, summaries or results
    are stored, unless ``force``; its reference, weights and deltas always go with it."""
    check_models(request, [model])
    return _deleted(request, versions.delete_version(engine=engine, model=model,
                                                     version=version, force=force))


WindowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the window's id")]


def _window_read(window: Window) -> dict[str, Any]:
    row = window.row
    return MaintenanceRead(id=row.id, model=window.model, start=row.starts_at,
                           end=row.ends_at, reason=row.reason, created_at=row.created_at,
                           open=row.is_open(datetime.now(UTC))).model_dump(mode="json")


@router.post(
    "/{model}/maintenance",
    status_code=201,
    response_model=MaintenanceRead,
    responses=ERRORS,
    openapi_extra=body_doc(MaintenanceCreate),
    summary="Open a maintenance window: the model's drift, calibration and cohort pages are "
            "suppressed while it is open",
)
async def open_maintenance(model: str, request: Request, engine: EngineDep,
                           settings: SettingsDep) -> JSONResponse:
    """From start to end the model's drift, calibration and cohort pages are suppressed; their
    tickets still flow (docs/policy.md). Answers 201 with the window's id, which DELETE takes."""
    spec = await read_model(request, settings, MaintenanceCreate)
    check_models(request, [model])
    window = await run_in_threadpool(
        maintenance.open_window, engine=engine, model=model, starts_at=spec.start,
        ends_at=spec.end, reason=spec.reason)
    return JSONResponse(_window_read(window), status_code=201)


@router.get("/{model}/maintenance", response_model=list[MaintenanceRead], responses=ERRORS,
            summary="List a model's maintenance windows, latest start first")
def list_maintenance(model: str, engine: EngineDep) -> list[dict[str, Any]]:
    """The model's maintenance windows, past, open and future, each with its id, reason and whether
    it is open now."""
    return [_window_read(w) for w in maintenance.list_windows(engine=engine, model=model)]


@router.delete("/{model}/maintenance/{window_id}", response_model=MaintenanceRead,
               responses=ERRORS, summary="Cancel a maintenance window (removes it)")
def cancel_maintenance(model: str, window_id: WindowId, request: Request,
                       engine: EngineDep) -> dict[str, Any]:
    """Removes the window, and the suppression of pages with it. 404 for an unknown model or
    window."""
    check_models(request, [model])
    return _window_read(maintenance.cancel_window(engine=engine, model=model,
                                                  window_id=window_id))
