"""Registering, changing and deleting models: the rules and their transactions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from app.errors import Conflict, Invalid, Problem
from app.evaluation import policy as model_policy
from app.settings import Settings
from app.storage import registry as store
from app.storage.registry import ModelRow


@dataclass(frozen=True)
class RegisteredModel:
    """A model as the registry answers for it: its row and how many versions it has."""

    row: ModelRow
    versions: int


@dataclass(frozen=True)
class Deleted:
    """What a delete removed: rows per table, of the model (and the version, if one)."""

    model: str
    counts: dict[str, int]
    version: str | None = None


def conflict(what: str, fields: list[str]) -> Conflict:
    """A re-registration that differs from what is stored: the fields that differ."""
    return Conflict(
        "conflict",
        f"{what} is already registered with a different definition; register it under a new "
        "name, or send the identical definition",
        [Problem("differs from the registered value", field=f) for f in fields],
    )


def check_policy(settings: Settings, overrides: dict[str, Any], features: list[str],
                 cohort_keys: list[str]) -> None:
    """Invalid, naming every field path of a typed policy that its model or the ordering of
    the effective lines refuses."""
    bad = model_policy.problems(settings, overrides, features, cohort_keys)
    if bad:
        raise Invalid("validation_error", "the policy is invalid; see details",
                      [Problem(problem, field=path) for path, problem in bad])


def create_model(*, engine: Engine, settings: Settings, definition: dict[str, Any],
                 policy: dict[str, Any] | None) -> tuple[RegisteredModel, bool]:
    """Register a model, or return the identical one already registered (``created`` False);
    a policy is checked before anything is stored."""
    if policy is not None:
        check_policy(settings, policy, [f["name"] for f in definition["features"]],
                     definition["cohort_keys"])
    with engine.begin() as conn:
        try:
            row, created = store.create_model(conn=conn, definition=definition, policy=policy)
        except store.ConflictError as exc:
            raise conflict(f"model {definition['name']!r}", exc.fields) from None
        return _registered(conn, row), created


def _registered(conn: Connection, row: ModelRow) -> RegisteredModel:
    return RegisteredModel(row, store.count_versions(conn=conn, model_id=row.id))


def list_models(*, engine: Engine) -> list[RegisteredModel]:
    """Every model, by name."""
    with engine.connect() as conn:
        return [RegisteredModel(row, n) for row, n in store.list_models(conn=conn)]


def get_model(*, engine: Engine, name: str) -> RegisteredModel:
    with engine.connect() as conn:
        return _registered(conn, store.require_model(conn=conn, name=name))


def patch_model(*, engine: Engine, settings: Settings, name: str,
                policy: dict[str, Any] | None, cohort_keys: list[str] | None
                ) -> RegisteredModel:
    """Replace the policy whole and/or extend the cohort keys, in one transaction; the policy
    is checked against the cohort keys it will have."""
    if policy is None and cohort_keys is None:
        raise Invalid("validation_error", "there is nothing to change: send policy, "
                      "cohort_keys or both",
                      [Problem("required unless cohort_keys is sent", field="policy"),
                       Problem("required unless policy is sent", field="cohort_keys")])
    keys_sent = cohort_keys or []
    if dupes := sorted({k for k in keys_sent if keys_sent.count(k) > 1}):
        raise Invalid("validation_error", "cohort keys must be unique",
                      [Problem("repeated", field=f"cohort_keys.{k}") for k in dupes])
    with engine.begin() as conn:
        m = store.require_model(conn=conn, name=name)
        keys = m.cohort_keys if cohort_keys is None else cohort_keys
        if cohort_keys is not None:
            check_cohort_keys(m.cohort_keys, cohort_keys)
        if policy is not None:
            check_policy(settings, policy, all_features(conn, m), keys)
            m = store.set_policy(conn=conn, model=m, policy=policy)
        if keys != m.cohort_keys:
            m = store.set_cohort_keys(conn=conn, model=m, cohort_keys=keys)
        return _registered(conn, m)


def check_cohort_keys(current: list[str], sent: list[str]) -> None:
    """Conflict unless ``sent`` is ``current`` followed by new keys: a removed or renamed key
    would orphan the cohorts stored under it (and reordering would change which key the
    generalization gap's overall error is read from)."""
    removed = [k for k in current if k not in sent]
    if removed:
        raise Conflict(
            "cohort_keys_changed",
            "cohort keys can only be added: stored predictions, summaries and results are "
            "keyed by the current ones. Send the current keys, in order, followed by the new "
            "ones; to stop using a key, stop sending it in predictions",
            [Problem("a current cohort key is missing (removed or renamed): "
                     f"{k[:128]!r}", field="cohort_keys") for k in removed])
    if sent[:len(current)] != current:
        raise Conflict(
            "cohort_keys_changed",
            "cohort keys can only be added at the end: send the current keys in their order "
            f"({', '.join(current)}), followed by the new ones",
            [Problem("the current keys are not the list's beginning, in order",
                     field="cohort_keys")])


def all_features(conn: Connection, m: ModelRow) -> list[str]:
    """The model's features and those its versions added: what a per-feature policy may
    name."""
    names = [f["name"] for f in m.features]
    for own in store.version_features(conn=conn, model_ids={m.id}).values():
        names += [f["name"] for f in own if f["name"] not in names]
    return names


def refuse_unless_forced(what: str, tables: list[str], force: bool) -> None:
    """Deleting production data is never implicit: Conflict naming each table that holds
    some, unless ``force``."""
    if tables and not force:
        raise Conflict(
            "has_data",
            f"{what} holds stored data ({', '.join(tables)}); nothing was deleted. Deleting it "
            "removes that data for good: repeat the request with ?force=true to do so",
            [Problem(f"rows are stored in {t}", field="force") for t in tables])


def delete_model(*, engine: Engine, name: str, force: bool) -> Deleted:
    """Refused (Conflict) while predictions, labels, summaries or results are stored, unless
    ``force``; versions, references, weights and maintenance windows always go with it."""
    with engine.begin() as conn:
        m = store.require_model(conn=conn, name=name)
        refuse_unless_forced(f"model {m.name!r}",
                             store.stored_data(conn=conn, model_id=m.id), force)
        return Deleted(m.name, store.delete_model(conn=conn, model=m))
