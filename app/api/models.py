"""Model and version registration and lookup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from app.api.auth import auth_responses, check_models, scoped
from app.api.deps import EngineDep, SettingsDep, body_doc, read_model
from app.api.schemas import (
    DeletedRead,
    ErrorBody,
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
from app.errors import ApiError, Problem
from app.evaluation import policy as model_policy
from app.settings import Settings
from app.storage import maintenance, registry

router = APIRouter(prefix="/v1/models", tags=["models"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"GET": "read", "POST": "admin",
                                                  "PATCH": "admin", "DELETE": "admin"}))])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 415, 422, 503)
}


def _model_read(row: registry.ModelRow, n_versions: int, settings: Settings) -> dict[str, Any]:
    policy = {"overrides": row.policy,
              "effective": model_policy.effective(settings, row.policy).to_dict()}
    return ModelRead(**row.definition(), created_at=row.created_at, versions=n_versions,
                     policy=policy).model_dump(mode="json")


def _check_policy(settings: Settings, overrides: dict[str, Any], features: list[str],
                  cohort_keys: list[str]) -> None:
    """422 naming every field path of a typed policy that its model or the ordering of the
    effective lines refuses."""
    bad = model_policy.problems(settings, overrides, features, cohort_keys)
    if bad:
        raise ApiError(422, "validation_error", "the policy is invalid; see details",
                       [Problem(problem, field=path) for path, problem in bad])


def _version_read(model: str, row: registry.VersionRow) -> dict[str, Any]:
    return VersionRead(model=model, version=row.version, created_at=row.created_at,
                       registered_at=row.registered_at, metadata=row.metadata,
                       features=row.features).model_dump(mode="json")


def _conflict(what: str, fields: list[str]) -> ApiError:
    return ApiError(
        409, "conflict",
        f"{what} is already registered with a different definition; register it under a new "
        "name, or send the identical definition",
        [Problem("differs from the registered value", field=f) for f in fields],
    )


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
    spec = await read_model(request, settings, ModelCreate)
    check_models(request, [spec.name])
    definition = spec.model_dump(mode="json", exclude={"policy"})
    policy = None if spec.policy is None else policy_overrides(spec.policy)
    if policy is not None:
        _check_policy(settings, policy, [f.name for f in spec.features], spec.cohort_keys)

    def run() -> tuple[dict[str, Any], bool]:
        with engine.begin() as conn:
            try:
                row, created = registry.create_model(conn=conn, definition=definition,
                                                     policy=policy)
            except registry.ConflictError as exc:
                raise _conflict(f"model {spec.name!r}", exc.fields) from None
            n = registry.count_versions(conn=conn, model_id=row.id)
            return _model_read(row, n, settings), created

    body, created = await run_in_threadpool(run)
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("", response_model=list[ModelRead], summary="List models")
def list_models(request: Request, engine: EngineDep, settings: SettingsDep
                ) -> list[dict[str, Any]]:
    principal = getattr(request.state, "principal", None)
    with engine.connect() as conn:
        return [_model_read(row, n, settings) for row, n in registry.list_models(conn=conn)
                if principal is None or principal.may_touch(row.name)]


@router.get("/{model}", response_model=ModelRead, responses=ERRORS,
            summary="Get a model, with its policy (overrides and effective values)")
def get_model(model: str, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    with engine.connect() as conn:
        row = registry.require_model(conn=conn, name=model)
        return _model_read(row, registry.count_versions(conn=conn, model_id=row.id), settings)


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
    if spec.policy is None and spec.cohort_keys is None:
        raise ApiError(422, "validation_error", "there is nothing to change: send policy, "
                       "cohort_keys or both",
                       [Problem("required unless cohort_keys is sent", field="policy"),
                        Problem("required unless policy is sent", field="cohort_keys")])
    keys_sent = spec.cohort_keys or []
    if dupes := sorted({k for k in keys_sent if keys_sent.count(k) > 1}):
        raise ApiError(422, "validation_error", "cohort keys must be unique",
                       [Problem("repeated", field=f"cohort_keys.{k}") for k in dupes])
    policy = None if spec.policy is None else policy_overrides(spec.policy)

    def run() -> dict[str, Any]:
        with engine.begin() as conn:
            m = registry.require_model(conn=conn, name=model)
            keys = m.cohort_keys if spec.cohort_keys is None else spec.cohort_keys
            if spec.cohort_keys is not None:
                _check_cohort_keys(m.cohort_keys, spec.cohort_keys)
            if policy is not None:
                _check_policy(settings, policy, _all_features(conn, m), keys)
                m = registry.set_policy(conn=conn, model=m, policy=policy)
            if keys != m.cohort_keys:
                m = registry.set_cohort_keys(conn=conn, model=m, cohort_keys=keys)
            return _model_read(m, registry.count_versions(conn=conn, model_id=m.id), settings)

    return await run_in_threadpool(run)


def _check_cohort_keys(current: list[str], sent: list[str]) -> None:
    """409 unless ``sent`` is ``current`` followed by new keys: a removed or renamed key would
    orphan the cohorts stored under it (and reordering would change which key the
    generalization gap's overall error is read from)."""
    removed = [k for k in current if k not in sent]
    if removed:
        raise ApiError(
            409, "cohort_keys_changed",
            "cohort keys can only be added: stored predictions, summaries and results are "
            "keyed by the current ones. Send the current keys, in order, followed by the new "
            "ones; to stop using a key, stop sending it in predictions",
            [Problem("a current cohort key is missing (removed or renamed): "
                     f"{k[:128]!r}", field="cohort_keys") for k in removed])
    if sent[:len(current)] != current:
        raise ApiError(
            409, "cohort_keys_changed",
            "cohort keys can only be added at the end: send the current keys in their order "
            f"({', '.join(current)}), followed by the new ones",
            [Problem("the current keys are not the list's beginning, in order",
                     field="cohort_keys")])


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
    spec = await read_model(request, settings, VersionCreate)
    metadata = spec.metadata.model_dump(mode="json", by_alias=True, exclude_none=True)
    features = None if spec.features is None else [f.model_dump() for f in spec.features]

    def run(db: Engine) -> tuple[dict[str, Any], bool]:
        with db.begin() as conn:
            m = registry.require_model(conn=conn, name=model)
            if features is not None:
                _check_version_features(conn, m, features)
            try:
                row, created = registry.create_version(
                    conn=conn, model_id=m.id, version=spec.version, created_at=spec.created_at,
                    metadata=metadata, features=features,
                )
            except registry.ConflictError as exc:
                raise _conflict(f"version {spec.version!r} of {model[:128]!r}",
                                exc.fields) from None
            if created and spec.maintenance_seconds is not None:
                now = datetime.now(UTC)
                maintenance.open_window(
                    conn=conn, model_id=m.id, starts_at=now,
                    ends_at=now + timedelta(seconds=spec.maintenance_seconds),
                    reason=f"version {spec.version} registered")
            return _version_read(m.name, row), created

    body, created = await run_in_threadpool(run, engine)
    return JSONResponse(body, status_code=201 if created else 200)


def _all_features(conn: Any, m: registry.ModelRow) -> list[str]:
    """The model's features and those its versions added: what a per-feature policy may
    name."""
    names = [f["name"] for f in m.features]
    for own in registry.version_features(conn=conn, model_ids={m.id}).values():
        names += [f["name"] for f in own if f["name"] not in names]
    return names


def _check_version_features(conn: Any, m: registry.ModelRow,
                            features: list[dict[str, str]]) -> None:
    """422 for a feature declared with another type than the model's, or than another
    version's added feature of that name: a name means one column of one type per model (the
    summaries hold one per name)."""
    declared = {f["name"]: (f["type"], "the model") for f in m.features}
    for own in registry.version_features(conn=conn, model_ids={m.id}).values():
        for f in own:
            declared.setdefault(f["name"], (f["type"], "another version"))
    bad = [Problem(f"declared {declared[f['name']][0]} by {declared[f['name']][1]}; a "
                   "feature keeps its type across versions (use a new name)",
                   field=f"features.{i}.type")
           for i, f in enumerate(features)
           if f["name"] in declared and declared[f["name"]][0] != f["type"]]
    if bad:
        raise ApiError(422, "validation_error", "the version's features are invalid; see "
                       "details", bad)


@router.get("/{model}/versions", response_model=list[VersionRead], responses=ERRORS,
            summary="List a model's versions, in registration order")
def list_versions(model: str, engine: EngineDep) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        m = registry.require_model(conn=conn, name=model)
        return [_version_read(m.name, r) for r in registry.list_versions(conn=conn, model_id=m.id)]


@router.patch(
    "/{model}/versions/{version}",
    response_model=VersionRead,
    responses=ERRORS,
    openapi_extra=body_doc(VersionPatch),
    summary="Set a version's training metadata, until its first prediction is stored",
)
async def patch_version(model: str, version: str, request: Request, engine: EngineDep,
                        settings: SettingsDep) -> dict[str, Any]:
    spec = await read_model(request, settings, VersionPatch)
    check_models(request, [model])
    training = spec.training.model_dump(mode="json", exclude_none=True)

    def run() -> dict[str, Any]:
        with engine.begin() as conn:
            m = registry.require_model(conn=conn, name=model)
            v = registry.require_version(conn=conn, model=m, version=version)
            if registry.has_predictions(conn=conn, model_id=m.id, version_id=v.id):
                raise ApiError(
                    409, "version_in_use",
                    "the version has stored predictions: what it was trained as is fixed; "
                    "register a new version to change it",
                    [Problem("predictions are stored for this version", field="version")])
            return _version_read(m.name, registry.set_training(conn=conn, version=v,
                                                               training=training))

    return await run_in_threadpool(run)


Force = Annotated[bool, Query(description="delete also when data is stored (predictions, "
                                        "labels, summaries, results): all of it goes")]


def _refuse_unless_forced(what: str, tables: list[str], force: bool) -> None:
    if tables and not force:
        raise ApiError(
            409, "has_data",
            f"{what} holds stored data ({', '.join(tables)}); nothing was deleted. Deleting it "
            "removes that data for good: repeat the request with ?force=true to do so",
            [Problem(f"rows are stored in {t}", field="force") for t in tables])


@router.delete("/{model}", response_model=DeletedRead, responses=ERRORS,
               summary="Delete a model, its versions and (with force) all its data")
def delete_model(model: str, request: Request, engine: EngineDep,
                 force: Force = False) -> dict[str, Any]:
    """Refused (409) while predictions, labels, summaries or results are stored, unless
    ``force``; versions, references, weights and maintenance windows always go with it."""
    check_models(request, [model])
    with engine.begin() as conn:
        m = registry.require_model(conn=conn, name=model)
        _refuse_unless_forced(f"model {m.name!r}",
                              registry.stored_data(conn=conn, model_id=m.id), force)
        deleted = registry.delete_model(conn=conn, model=m)
    request.app.state.schemas.forget(m.name)
    return {"model": m.name, "deleted": deleted}


@router.delete("/{model}/versions/{version}", response_model=DeletedRead, responses=ERRORS,
               summary="Delete a version and (with force) all its data")
def delete_version(model: str, version: str, request: Request, engine: EngineDep,
                   force: Force = False) -> dict[str, Any]:
    """Refused (409) while the version's predictions, their labels, summaries or results
    are stored, unless ``force``; its reference, weights and deltas always go with it."""
    check_models(request, [model])
    with engine.begin() as conn:
        m = registry.require_model(conn=conn, name=model)
        v = registry.require_version(conn=conn, model=m, version=version)
        _refuse_unless_forced(f"version {v.version!r} of {m.name!r}",
                              registry.stored_data(conn=conn, model_id=m.id, version_id=v.id),
                              force)
        deleted = registry.delete_version(conn=conn, model=m, version=v)
    request.app.state.schemas.forget(m.name)
    return {"model": m.name, "version": v.version, "deleted": deleted}


WindowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the window's id")]


def _window_read(model: str, row: maintenance.MaintenanceRow) -> dict[str, Any]:
    return MaintenanceRead(id=row.id, model=model, start=row.starts_at, end=row.ends_at,
                           reason=row.reason, created_at=row.created_at,
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
    spec = await read_model(request, settings, MaintenanceCreate)
    check_models(request, [model])

    def run() -> dict[str, Any]:
        with engine.begin() as conn:
            m = registry.require_model(conn=conn, name=model)
            return _window_read(m.name, maintenance.open_window(
                conn=conn, model_id=m.id, starts_at=spec.start, ends_at=spec.end,
                reason=spec.reason))

    return JSONResponse(await run_in_threadpool(run), status_code=201)


@router.get("/{model}/maintenance", response_model=list[MaintenanceRead], responses=ERRORS,
            summary="List a model's maintenance windows, latest start first")
def list_maintenance(model: str, engine: EngineDep) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        m = registry.require_model(conn=conn, name=model)
        return [_window_read(m.name, w)
                for w in maintenance.list_windows(conn=conn, model_id=m.id)]


@router.delete("/{model}/maintenance/{window_id}", response_model=MaintenanceRead,
               responses=ERRORS, summary="Cancel a maintenance window (removes it)")
def cancel_maintenance(model: str, window_id: WindowId, request: Request,
                       engine: EngineDep) -> dict[str, Any]:
    check_models(request, [model])
    with engine.begin() as conn:
        m = registry.require_model(conn=conn, name=model)
        row = maintenance.cancel(conn=conn, model_id=m.id, window_id=window_id)
        if row is None:
            raise ApiError(404, "unknown_maintenance_window",
                           f"model {m.name!r} has no maintenance window of this id",
                           [Problem("no such window of this model", field="window_id")])
        return _window_read(m.name, row)
