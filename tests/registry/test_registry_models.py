"""Model registration rules: create, patch, delete, each in its own transaction, refusing
with domain errors (no HTTP status below the API)."""

from __future__ import annotations

import pytest

from app.errors import Conflict, Invalid, NotFound
from app.registry import models, versions
from tests.registry.conftest import store_prediction


def test_create_is_idempotent_and_a_different_definition_conflicts(engine, settings,
                                                                    definition):
    first, created = models.create_model(engine=engine, settings=settings,
                                         definition=definition, policy=None)
    assert created and first.row.name == "fraud" and first.versions == 0
    again, created = models.create_model(engine=engine, settings=settings,
                                         definition=definition, policy=None)
    assert not created and again.row.id == first.row.id
    with pytest.raises(Conflict) as err:
        models.create_model(engine=engine, settings=settings,
                            definition={**definition, "cohort_keys": ["country"]}, policy=None)
    assert err.value.code == "conflict"
    assert [p.field for p in err.value.details] == ["cohort_keys"]


def test_a_policy_naming_an_unknown_feature_is_refused_before_anything_is_stored(
        engine, settings, definition):
    with pytest.raises(Invalid) as err:
        models.create_model(engine=engine, settings=settings, definition=definition,
                            policy={"features": {"nope": {"psi_critical": 0.3}}})
    assert err.value.code == "validation_error"
    assert [p.field for p in err.value.details] == ["policy.features.nope"]
    assert models.list_models(engine=engine) == []


def test_patch_needs_a_change_and_only_extends_cohort_keys(engine, settings, definition):
    models.create_model(engine=engine, settings=settings, definition=definition, policy=None)
    with pytest.raises(Invalid) as err:
        models.patch_model(engine=engine, settings=settings, name="fraud", policy=None,
                           cohort_keys=None)
    assert [p.field for p in err.value.details] == ["policy", "cohort_keys"]
    with pytest.raises(Invalid) as err:
        models.patch_model(engine=engine, settings=settings, name="fraud", policy=None,
                           cohort_keys=["region", "tier", "tier"])
    assert [p.field for p in err.value.details] == ["cohort_keys.tier"]
    with pytest.raises(Conflict) as err:
        models.patch_model(engine=engine, settings=settings, name="fraud", policy=None,
                           cohort_keys=["tier"])
    assert err.value.code == "cohort_keys_changed"
    patched = models.patch_model(engine=engine, settings=settings, name="fraud",
                                 policy={"psi_critical": 0.4}, cohort_keys=["region", "tier"])
    assert patched.row.cohort_keys == ["region", "tier"]
    assert patched.row.policy == {"psi_critical": 0.4}
    assert models.get_model(engine=engine, name="fraud").row == patched.row
    with pytest.raises(NotFound):
        models.get_model(engine=engine, name="nope")


def test_a_policy_may_name_a_feature_a_version_added(engine, settings, definition):
    models.create_model(engine=engine, settings=settings, definition=definition, policy=None)
    versions.create_version(engine=engine, model="fraud", version="v2", created_at=None,
                            metadata={}, features=[{"name": "age", "type": "numeric"}],
                            maintenance_seconds=None)
    assert "age" in models.patch_model(
        engine=engine, settings=settings, name="fraud", cohort_keys=None,
        policy={"features": {"age": {"psi_critical": 0.3}}}).row.policy["features"]


def test_delete_refuses_stored_data_unless_forced(app, engine, settings, definition):
    models.create_model(engine=engine, settings=settings, definition=definition, policy=None)
    versions.create_version(engine=engine, model="fraud", version="v1", created_at=None,
                            metadata={}, features=None, maintenance_seconds=None)
    store_prediction(app, settings)
    with pytest.raises(Conflict) as err:
        models.delete_model(engine=engine, name="fraud", force=False)
    assert err.value.code == "has_data"
    assert "predictions" in [p.problem.rsplit(" ", 1)[-1] for p in err.value.details]
    assert models.get_model(engine=engine, name="fraud").versions == 1
    deleted = models.delete_model(engine=engine, name="fraud", force=True)
    assert deleted.model == "fraud" and deleted.version is None
    assert deleted.counts["predictions"] == 1 and deleted.counts["models"] == 1
    with pytest.raises(NotFound):
        models.get_model(engine=engine, name="fraud")
