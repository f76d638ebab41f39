"""Weights upload and version comparison: an L1 strength raised in a sweep shows up as a
sparsity jump in the stored delta and in the compare report."""

from __future__ import annotations

import io

import numpy as np
import pytest
from safetensors.numpy import save
from sqlalchemy import select

from app.storage.tables import version_deltas, weight_stats
from tests.factories import binary_model

OCTET = {"content-type": "application/octet-stream"}


def weights_v1(rng: np.random.Generator) -> dict[str, np.ndarray]:
    w = rng.normal(size=(50, 20)).astype(np.float32)
    w[:, :4] = 0.0  # 20% zeros
    return {"dense/kernel": w, "dense/bias": rng.normal(size=20).astype(np.float32),
            "old/extra": np.ones(3, dtype=np.float32)}


def weights_v2(v1: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stronger L1: 40% of the kernel is zero, the survivors shrink."""
    w = v1["dense/kernel"].copy() * 0.8
    w[:, 4:8] = 0.0
    return {"dense/kernel": w, "dense/bias": v1["dense/bias"] * 0.9,
            "new/head": np.full((2, 2), 0.5, dtype=np.float16)}


def register(client, versions) -> None:  # noqa: ANN001
    client.post("/v1/models", json=binary_model())
    for name, lam in versions:
        r = client.post("/v1/models/fraud/versions", json={
            "version": name, "metadata": {"regularization": {"type": "l1", "lambda": lam}}})
        assert r.status_code == 201


def npz_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    return buf.getvalue()


def test_sparsity_jump_between_versions(client, engine):
    rng = np.random.default_rng(0)
    register(client, [("v1", 0.001), ("v2", 0.01)])
    v1 = weights_v1(rng)
    v2 = weights_v2(v1)
    r1 = client.post("/v1/models/fraud/versions/v1/weights", content=npz_bytes(v1),
                     headers=OCTET)
    assert r1.status_code == 201, r1.text
    assert r1.json()["tensors"] == 3 and r1.json()["predecessor"] is None
    r2 = client.post("/v1/models/fraud/versions/v2/weights", content=save(v2), headers=OCTET)
    assert r2.status_code == 201, r2.text
    body = r2.json()
    assert body["predecessor"] == "v1"
    k1, k2 = v1["dense/kernel"], v2["dense/kernel"]
    n1 = sum(a.size for a in v1.values())
    n2 = sum(a.size for a in v2.values())
    z1 = sum(int(np.count_nonzero(np.abs(a) <= 1e-8)) for a in v1.values())
    z2 = sum(int(np.count_nonzero(np.abs(a.astype(np.float64)) <= 1e-8)) for a in v2.values())
    expected_pp = (z2 / n2 - z1 / n1) * 100
    assert body["delta_vs_predecessor"]["sparsity_change_pp"] == pytest.approx(expected_pp)

    cmp = client.get("/v1/models/fraud/versions/compare",
                     params={"base": "v1", "candidate": "v2"}).json()
    assert cmp["base"]["regularization"] == {"type": "l1", "lambda": 0.001}
    assert cmp["candidate"]["regularization"] == {"type": "l1", "lambda": 0.01}
    kernel = next(t for t in cmp["tensors"] if t["name"] == "dense/kernel")
    assert kernel["sparsity_change_pp"] == pytest.approx(20.0)
    l1_1 = float(np.abs(k1.astype(np.float64)).sum())
    l1_2 = float(np.abs(k2.astype(np.float64)).sum())
    assert kernel["l1_relative_change"] == pytest.approx((l1_2 - l1_1) / l1_1, rel=1e-9)
    assert cmp["added"] == ["new/head"] and cmp["removed"] == ["old/extra"]
    assert cmp["overall"]["sparsity_change_pp"] == pytest.approx(expected_pp)

    with engine.connect() as conn:
        stored = conn.execute(select(version_deltas)).all()
        tensors = conn.execute(select(weight_stats.c.tensor)
                               .where(weight_stats.c.version_id == 2)).scalars().all()
    assert len(stored) == 1
    assert stored[0].delta["overall"]["sparsity_change_pp"] == pytest.approx(expected_pp)
    assert sorted(tensors) == ["__all__", "dense/bias", "dense/kernel", "new/head"]


def test_summaries_instead_of_a_file_and_late_predecessor(client, engine):
    register(client, [("v1", 0.001), ("v2", 0.01), ("v3", 0.1)])
    summary = {"tensors": [{"name": "w", "shape": [10], "count": 10, "zeros": 2, "l1": 4.0,
                            "l2": 2.0, "max_abs": 1.0, "mean": 0.1, "std": 0.5}]}
    later = {"tensors": [{**summary["tensors"][0], "zeros": 6, "l1": 2.0}]}
    assert client.post("/v1/models/fraud/versions/v3/weights", json=later).status_code == 201
    # v1 arrives after v3: v3's predecessor with weights is now v1
    r = client.post("/v1/models/fraud/versions/v1/weights", json=summary)
    assert r.status_code == 201 and r.json()["predecessor"] is None
    with engine.connect() as conn:
        stored = conn.execute(select(version_deltas)).all()
    assert [(d.base_version_id, d.candidate_version_id) for d in stored] == [(1, 3)]
    assert stored[0].delta["overall"]["sparsity_change_pp"] == pytest.approx(40.0)
    assert stored[0].delta["overall"]["l1_relative_change"] == pytest.approx(-0.5)


@pytest.mark.parametrize("body, headers, status, code", [
    (b"garbage", OCTET, 422, "invalid_weights"),
    (b'{"tensors": []}', {"content-type": "application/json"}, 422, "validation_error"),
    (b'{"tensors": [{"name": "w", "count": 4, "zeros": 9, "l1": 1, "l2": 1}]}',
     {"content-type": "application/json"}, 422, "validation_error"),
    (b'{"tensors": [{"name": "w", "count": 4, "zeros": 0, "l1": NaN, "l2": 1}]}',
     {"content-type": "application/json"}, 422, "validation_error"),
    (b"x", {"content-type": "text/plain"}, 415, "unsupported_media_type"),
])
def test_bad_weight_uploads(client, engine, body, headers, status, code):
    register(client, [("v1", 0.1)])
    r = client.post("/v1/models/fraud/versions/v1/weights", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    with engine.connect() as conn:
        assert conn.execute(select(weight_stats)).all() == []


def test_compare_errors(client):
    register(client, [("v1", 0.1), ("v2", 0.2)])
    r = client.get("/v1/models/fraud/versions/compare", params={"base": "v1", "candidate": "v9"})
    assert r.status_code == 404 and r.json()["code"] == "unknown_version"
    r = client.get("/v1/models/fraud/versions/compare", params={"base": "v1", "candidate": "v2"})
    assert r.status_code == 422 and r.json()["code"] == "no_weights"
    r = client.post("/v1/models/fraud/versions/v7/weights", content=b"x", headers=OCTET)
    assert r.status_code == 404


def test_tensor_names_that_cannot_be_stored_are_422(client, engine):
    register(client, [("v1", 0.1)])
    r = client.post("/v1/models/fraud/versions/v1/weights",
                    content=save({"a\x00b": np.ones(3, dtype=np.float32)}), headers=OCTET)
    assert r.status_code == 422, r.text
    with engine.connect() as conn:
        assert conn.execute(select(weight_stats)).all() == []
