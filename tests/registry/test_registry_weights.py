"""Weights of a version: summaries read from an upload, stored per tensor with the deltas to
the neighbouring versions, compared; refusals as domain errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.errors import Invalid
from app.registry import models, versions, weights
from app.storage import weights as store


def tensors(scale: float) -> bytes:
    return json.dumps({"tensors": [
        {"name": "dense/kernel", "shape": [2, 2], "count": 4, "zeros": 1, "l1": 3.0 * scale,
         "l2": 2.0 * scale, "max_abs": 1.5 * scale, "mean": 0.1, "std": 0.5}]}).encode()


@pytest.fixture
def fraud(engine, settings, definition):
    models.create_model(engine=engine, settings=settings, definition=definition, policy=None)
    for name in ("v1", "v2", "v3"):
        versions.create_version(engine=engine, model="fraud", version=name, created_at=None,
                                metadata={}, features=None, maintenance_seconds=None)


def upload(engine, settings, tmp_path, version, body, ctype="application/json"):
    path = tmp_path / f"{version}.bin"
    path.write_bytes(body)
    return weights.upload_weights(engine=engine, settings=settings, model_name="fraud",
                                  version=version, path=path, ctype=ctype,
                                  feature_tensor=None, feature_axis=None)


def test_invalid_summaries_name_every_tensor_and_store_nothing(engine, settings, tmp_path,
                                                               fraud):
    body = json.dumps({"tensors": [{"name": ""}, {"name": "a", "count": -1}]}).encode()
    with pytest.raises(Invalid) as err:
        upload(engine, settings, tmp_path, "v1", body)
    assert err.value.message == "invalid tensor summaries; nothing was stored"
    assert [p.index for p in err.value.details] == [0, 1]
    with pytest.raises(Invalid) as err:
        upload(engine, settings, tmp_path, "v1", b"PK not a zip", "application/octet-stream")
    assert err.value.code == "invalid_weights"
    with engine.connect() as conn:
        assert store.tensor_stats(conn=conn, version_id=1) is None


def test_an_upload_between_two_versions_stores_both_deltas(engine, settings, tmp_path,
                                                           fraud):
    upload(engine, settings, tmp_path, "v1", tensors(1.0))
    upload(engine, settings, tmp_path, "v3", tensors(0.5))
    stored = upload(engine, settings, tmp_path, "v2", tensors(0.8))
    assert stored["predecessor"] == "v1" and stored["tensors"] == 1
    assert stored["delta_vs_predecessor"]["l1_relative_change"] == pytest.approx(-0.2)
    ids = [v.row.id for v in versions.list_versions(engine=engine, model="fraud")]
    with engine.connect() as conn:
        report = weights.compare(conn=conn, settings=settings, model_name="fraud", base="v2",
                                 candidate="v3")
        assert store.with_weights(conn=conn, version_ids=ids) == set(ids)
        [kernel] = store.tensor_stats(conn=conn, version_id=ids[0])
    assert report["overall"]["l1_relative_change"] == pytest.approx(0.5 / 0.8 - 1)
    assert report["checks"]["norm_jump"]["decision"] in ("ok", "warning", "critical")
    assert kernel["name"] == "dense/kernel"


def test_compare_without_weights_names_the_side(engine, settings, tmp_path, fraud):
    upload(engine, settings, tmp_path, "v1", tensors(1.0))
    with engine.connect() as conn, pytest.raises(Invalid) as err:
        weights.compare(conn=conn, settings=settings, model_name="fraud", base="v1",
                        candidate="v2")
    assert err.value.code == "no_weights"
    assert [p.field for p in err.value.details] == ["candidate"]


def test_a_feature_tensor_that_does_not_fit_is_invalid(engine, settings, tmp_path, fraud):
    path = tmp_path / "w.npz"
    np.savez(path, coef=np.ones((1, 3), dtype=np.float32))
    with pytest.raises(Invalid) as err:
        weights.upload_weights(engine=engine, settings=settings, model_name="fraud",
                               version="v1",
                               path=path, ctype="application/octet-stream",
                               feature_tensor="coef", feature_axis=-1)
    assert [p.field for p in err.value.details] == ["feature_axis"]
    skipped = weights.upload_weights(engine=engine, settings=settings, model_name="fraud",
                                     version="v1", path=path, ctype="application/octet-stream",
                                     feature_tensor=None, feature_axis=None)
    assert skipped["features"] is None and "coef" in skipped["features_skipped"]
