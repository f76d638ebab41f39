"""Version registration rules: one type per feature name, idempotent re-registration, a
maintenance window opened by a new registration only, training metadata fixed once a
prediction is stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.errors import Conflict, Invalid, NotFound
from app.registry import maintenance, models, versions
from tests.registry.conftest import store_prediction


@pytest.fixture
def fraud(engine, settings, definition):
    return models.create_model(engine=engine, settings=settings, definition=definition,
                               policy=None)[0]


def register(engine, name="v1", **over):
    args = {"created_at": None, "metadata": {"hyperparameters": {"lr": 0.1}},
            "features": None, "maintenance_seconds": None, **over}
    return versions.create_version(engine=engine, model="fraud", version=name, **args)


def test_reregistration_is_idempotent_and_only_a_new_one_opens_maintenance(engine, fraud):
    v, created = register(engine, maintenance_seconds=600)
    assert created and v.model == "fraud" and v.row.version == "v1"
    again, created = register(engine, maintenance_seconds=600)
    assert not created and again.row.id == v.row.id
    [window] = maintenance.list_windows(engine=engine, model="fraud")
    assert window.row.reason == "version v1 registered"
    assert window.row.is_open(datetime.now(UTC))
    with pytest.raises(Conflict) as err:
        register(engine, metadata={})
    assert err.value.code == "conflict" and [p.field for p in err.value.details] == ["metadata"]


def test_a_feature_keeps_its_type_across_the_model_and_its_versions(engine, fraud):
    register(engine, "v2", features=[{"name": "age", "type": "numeric"}])
    with pytest.raises(Invalid) as err:
        register(engine, "v3", features=[{"name": "amount", "type": "categorical"},
                                         {"name": "age", "type": "categorical"}])
    assert [p.field for p in err.value.details] == ["features.0.type", "features.1.type"]
    assert "by the model" in err.value.details[0].problem
    assert "by another version" in err.value.details[1].problem
    assert [v.row.version for v in versions.list_versions(engine=engine, model="fraud")] == [
        "v2"]


def test_training_is_fixed_once_a_prediction_is_stored(app, engine, settings, fraud):
    register(engine)
    v = versions.set_training(engine=engine, model="fraud", version="v1",
                              training={"train_loss": 0.3})
    assert v.row.metadata == {"hyperparameters": {"lr": 0.1}, "training": {"train_loss": 0.3}}
    store_prediction(app, settings)
    with pytest.raises(Conflict) as err:
        versions.set_training(engine=engine, model="fraud", version="v1", training={})
    assert err.value.code == "version_in_use"
    with pytest.raises(NotFound) as missing:
        versions.set_training(engine=engine, model="fraud", version="v9", training={})
    assert missing.value.code == "unknown_version"


def test_delete_version_refuses_stored_data_unless_forced(app, engine, settings, fraud):
    register(engine)
    register(engine, "v2")
    store_prediction(app, settings)
    assert versions.delete_version(engine=engine, model="fraud", version="v2",
                                   force=False).version == "v2"
    with pytest.raises(Conflict) as err:
        versions.delete_version(engine=engine, model="fraud", version="v1", force=False)
    assert err.value.code == "has_data"
    deleted = versions.delete_version(engine=engine, model="fraud", version="v1", force=True)
    assert deleted.counts["predictions"] == 1 and deleted.counts["model_versions"] == 1
    assert versions.list_versions(engine=engine, model="fraud") == []
