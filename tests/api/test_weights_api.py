"""Weights upload and version comparison: an L1 strength raised in a sweep shows up as a
sparsity jump in the stored delta and in the compare report."""

from __future__ import annotations

import io

import numpy as np
import pytest
from safetensors.numpy import save
from sqlalchemy import select

from app.storage.tables import feature_weights, version_deltas, weight_stats
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


def register(client, versions) -> None:
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


# --- per-feature weights -----------------------------------------------------------------

FEATURES = [f"f{i}" for i in range(6)] + ["country", "channel"]


def register_wide(client, versions) -> None:
    """A model of 8 features (6 numeric, 2 categorical)."""
    r = client.post("/v1/models", json=binary_model(
        "wide", features=[{"name": n, "type": "numeric"} for n in FEATURES[:6]]
        + [{"name": n, "type": "categorical"} for n in FEATURES[6:]]))
    assert r.status_code == 201, r.text
    for name in versions:
        assert client.post("/v1/models/wide/versions", json={"version": name}).status_code == 201


def fitted_coef(C: float, l1: bool) -> np.ndarray:
    """coef_ of a logistic regression fitted on 8 columns of which f0, f1, f2 and channel carry
    the signal; the L1 fit drops the weak ones."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(800, 8))
    logit = 2.0 * x[:, 0] - 1.5 * x[:, 1] + 0.25 * x[:, 2] + 0.2 * x[:, 7]
    y = (logit + 0.5 * rng.normal(size=800) > 0).astype(int)
    clf = LogisticRegression(C=C, l1_ratio=1.0 if l1 else 0.0, solver="liblinear").fit(x, y)
    return clf.coef_


def test_sklearn_coef_is_per_feature_without_configuration(client, engine):
    register_wide(client, ["light", "strong"])
    light, strong = fitted_coef(10.0, l1=False), fitted_coef(0.02, l1=True)
    # the tensor names of the client's scikit-learn helper: coef, intercept
    r = client.post("/v1/models/wide/versions/light/weights", headers=OCTET,
                    content=npz_bytes({"coef": light, "intercept": np.zeros(1)}))
    assert r.status_code == 201, r.text
    fw = r.json()["features"]
    assert (fw["tensor"], fw["axis"]) == ("coef", 1)
    l1 = np.abs(light).sum(axis=0)
    assert [f["feature"] for f in fw["features"]] == FEATURES
    assert [f["l1"] for f in fw["features"]] == pytest.approx(l1.tolist(), rel=1e-12)
    assert [f["l2"] for f in fw["features"]] == pytest.approx(
        np.linalg.norm(light, axis=0).tolist(), rel=1e-12)
    assert [f["importance"] for f in fw["features"]] == pytest.approx(
        (l1 / l1.sum()).tolist(), rel=1e-12)
    assert fw["nonzero"] == 8
    r = client.post("/v1/models/wide/versions/strong/weights", headers=OCTET,
                    content=npz_bytes({"coef": strong, "intercept": np.zeros(1)}))
    assert r.status_code == 201, r.text
    zeroed = [n for n, w in zip(FEATURES, strong[0], strict=True) if w == 0.0]
    assert 2 <= len(zeroed) < 8 and "f0" not in zeroed
    assert r.json()["features"]["nonzero"] == 8 - len(zeroed)
    assert r.json()["features_vs_predecessor"]["zeroed"] == zeroed

    cmp = client.get("/v1/models/wide/versions/compare",
                     params={"base": "light", "candidate": "strong"}).json()
    d = cmp["features"]
    assert d["zeroed"] == zeroed and d["revived"] == []
    assert (d["nonzero_base"], d["nonzero_candidate"]) == (8, 8 - len(zeroed))
    share_light = np.abs(light[0]) / np.abs(light[0]).sum()
    share_strong = np.abs(strong[0]) / np.abs(strong[0]).sum()
    change = share_strong - share_light
    top = int(np.argmax(np.abs(change)))
    assert d["shifts"][0]["feature"] == FEATURES[top]
    assert d["shifts"][0]["change"] == pytest.approx(change[top], rel=1e-12)
    top5 = [FEATURES[i] for i in np.argsort(-share_light, kind="stable")[:5]]
    assert [z["feature"] for z in d["zeroed_top"]] == [n for n in top5 if n in zeroed]
    assert cmp["candidate"]["features"]["importance"]["f0"] == pytest.approx(share_strong[0])
    back = client.get("/v1/models/wide/versions/compare",
                      params={"base": "strong", "candidate": "light"}).json()["features"]
    assert back["revived"] == zeroed and back["zeroed"] == []
    with engine.connect() as conn:
        stored = conn.execute(select(version_deltas.c.delta)).scalar_one()
        rows = conn.execute(select(feature_weights.c.nonzero)
                            .order_by(feature_weights.c.version_id)).scalars().all()
    assert stored["features"]["zeroed"] == zeroed
    assert rows == [8, 8 - len(zeroed)]


def test_named_tensor_and_axis_of_a_two_layer_network(client, engine):
    register_wide(client, ["v1"])
    rng = np.random.default_rng(5)
    fc1 = rng.normal(size=(16, 8)).astype(np.float32)  # (out, in), as torch stores it
    fc1[:, [3, 6]] = 0.0
    r = client.post("/v1/models/wide/versions/v1/weights", headers=OCTET,
                    params={"feature_tensor": "fc1.weight", "feature_axis": -1},
                    content=save({"fc1.weight": fc1, "fc1.bias": np.ones(16, np.float32),
                                  "fc2.weight": rng.normal(size=(1, 16)).astype(np.float32)}))
    assert r.status_code == 201, r.text
    fw = r.json()["features"]
    assert (fw["tensor"], fw["axis"], fw["nonzero"]) == ("fc1.weight", 1, 6)
    assert [f["zero"] for f in fw["features"]] == [i in (3, 6) for i in range(8)]
    assert [f["l2"] for f in fw["features"]] == pytest.approx(
        np.linalg.norm(fc1.astype(np.float64), axis=0).tolist(), rel=1e-12)
    # a later upload without per-feature weights replaces them
    r = client.post("/v1/models/wide/versions/v1/weights", headers=OCTET,
                    content=save({"fc1.weight": fc1}))
    assert r.status_code == 201 and r.json()["features"] is None
    with engine.connect() as conn:
        assert conn.execute(select(feature_weights)).all() == []


@pytest.mark.parametrize("params, tensors, field, words", [
    ({"feature_tensor": "nope", "feature_axis": 0}, None, "feature_tensor", "no tensor 'nope'"),
    ({"feature_tensor": "w", "feature_axis": 0}, None, "feature_axis", "length 3"),
    ({"feature_tensor": "w", "feature_axis": 2}, None, "feature_axis", "axis 2 does not"),
    ({"feature_tensor": "w"}, None, "feature_axis", "say which axis"),
    ({"feature_axis": 1}, None, "feature_axis", "needs feature_tensor"),
    ({"feature_axis": "first"}, None, "feature_axis", ""),
    ({"feature_tensor": "w", "feature_axis": 0}, {"w": np.array(["a"] * 8)}, "feature_tensor",
     ""),
])
def test_bad_feature_tensor_or_axis_is_422_and_stores_nothing(client, engine, params, tensors,
                                                              field, words):
    register_wide(client, ["v1"])
    body = npz_bytes(tensors or {"w": np.ones((3, 8))})
    r = client.post("/v1/models/wide/versions/v1/weights", headers=OCTET, params=params,
                    content=body)
    assert r.status_code == 422, r.text
    assert any(field in (e.get("field") or "") for e in r.json()["details"]), r.json()
    assert words in r.text
    with engine.connect() as conn:
        assert conn.execute(select(weight_stats)).all() == []
        assert conn.execute(select(feature_weights)).all() == []


def test_feature_tensor_with_summaries_is_422(client):
    register_wide(client, ["v1"])
    summary = {"tensors": [{"name": "w", "shape": [8], "count": 8, "zeros": 2, "l1": 4.0,
                            "l2": 2.0, "max_abs": 1.0, "mean": 0.1, "std": 0.5}]}
    r = client.post("/v1/models/wide/versions/v1/weights", json=summary,
                    params={"feature_tensor": "w", "feature_axis": 0})
    assert r.status_code == 422 and "hold no per-feature weights" in r.text


def test_a_coef_of_expanded_columns_is_stored_without_per_feature_figures(client, engine):
    """A Pipeline whose encoder expanded a categorical feature: coef_ has 10 columns for 8
    features. The upload stands; the answer says why there are no per-feature figures."""
    register_wide(client, ["v1"])
    r = client.post("/v1/models/wide/versions/v1/weights", headers=OCTET,
                    content=npz_bytes({"coef": np.ones((1, 10)), "intercept": np.zeros(1)}))
    assert r.status_code == 201, r.text
    assert r.json()["features"] is None
    assert "shape [1, 10] does not have one entry per feature" in r.json()["features_skipped"]
    with engine.connect() as conn:
        assert len(conn.execute(select(weight_stats)).all()) == 3
        assert conn.execute(select(feature_weights)).all() == []
    # named explicitly, the same mismatch is refused
    r = client.post("/v1/models/wide/versions/v1/weights", headers=OCTET,
                    params={"feature_tensor": "coef", "feature_axis": 1},
                    content=npz_bytes({"coef": np.ones((1, 10))}))
    assert r.status_code == 422 and "the model declares 8 features" in r.text


def version_states(client) -> dict[str, float]:
    from tests.api.test_metrics import scrape
    return {dict(k[1])["check"]: v for k, v in scrape(client).items()
            if k[0] == "modelmon_version_check_state"
            and dict(k[1])["version"] == "v2" and dict(k[1])["base_version"] == "v1"}


@pytest.mark.parametrize("settings", [{"metrics_cache_seconds": 0}], indirect=True)
def test_version_checks_follow_the_model_policy_in_compare_and_metrics(client):
    """v2 zeroes 30 of v1's 100 weights (+0.30 sparsity, L1 and L2 down about 30% and 16%):
    critical under the default lines (0.1 / 0.2); a PATCH raising the model's sparsity lines
    above 0.30 makes the same stored delta ok in the compare report and in /metrics (the
    state the alert fires on) at once, with the lines applied stated."""
    rng = np.random.default_rng(3)
    register(client, [("v1", 0.001), ("v2", 0.01)])
    w1 = rng.uniform(0.5, 1.5, size=100).astype(np.float32)
    w2 = w1.copy()
    w2[:30] = 0.0
    for v, w in (("v1", w1), ("v2", w2)):
        r = client.post(f"/v1/models/fraud/versions/{v}/weights",
                        content=npz_bytes({"dense/kernel": w}), headers=OCTET)
        assert r.status_code == 201, r.text
    w1d, w2d = w1.astype(np.float64), w2.astype(np.float64)
    l1 = abs(np.abs(w2d).sum() / np.abs(w1d).sum() - 1)
    l2 = abs(np.sqrt((w2d ** 2).sum()) / np.sqrt((w1d ** 2).sum()) - 1)
    assert l1 < 0.5 and l2 < l1

    def checks() -> dict:
        r = client.get("/v1/models/fraud/versions/compare",
                       params={"base": "v1", "candidate": "v2"})
        assert r.status_code == 200, r.text
        return r.json()["checks"]

    c = checks()
    assert c["sparsity_jump"]["value"] == pytest.approx(0.30)
    assert c["sparsity_jump"]["lines"] == {"warning": 0.1, "critical": 0.2}
    assert c["sparsity_jump"]["decision"] == "critical"
    assert c["norm_jump"] == {"value": pytest.approx(l1), "norm": "l1",
                              "lines": {"warning": 0.5}, "decision": "ok"}
    assert version_states(client) == {"sparsity_jump": 2.0, "norm_jump": 0.0}

    r = client.patch("/v1/models/fraud", json={"policy": {
        "sparsity_jump_warning": 0.35, "sparsity_jump_critical": 0.5, "norm_jump_warning": 0.2}})
    assert r.status_code == 200, r.text
    c = checks()
    assert c["sparsity_jump"]["lines"] == {"warning": 0.35, "critical": 0.5}
    assert c["sparsity_jump"]["decision"] == "ok"
    assert c["norm_jump"]["decision"] == "warning"
    assert version_states(client) == {"sparsity_jump": 0.0, "norm_jump": 1.0}


def test_a_sparsity_warning_line_above_its_critical_is_422(client):
    register(client, [("v1", 0.001)])
    r = client.patch("/v1/models/fraud", json={"policy": {"sparsity_jump_warning": 0.3}})
    assert r.status_code == 422, r.text
    assert "policy.sparsity_jump_warning" in r.text
