import math

import numpy as np
import pytest
from monitoring_testutil import assert_json_safe
from safetensors.numpy import save_file
from weights_testutil import (
    DTYPES,
    FEATURES,
    assert_matches_numpy,
    numpy_reference,
    random_tensor,
)

from app.monitoring import (
    INSUFFICIENT_DATA,
    OK,
    UNSUPPORTED_DTYPE,
    TensorStats,
    WeightFileError,
    feature_delta,
    feature_weights,
    file_feature_weights,
    summarise_weight_file,
    tensor_stats,
    weight_delta,
    weight_summary,
)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_stats_equal_numpy_for_every_dtype(dtype):
    rng = np.random.default_rng(1)
    x = random_tensor(rng, dtype, (37, 91))
    s = tensor_stats(x, chunk_elems=500)  # many chunks: exercises the merge
    assert_matches_numpy(s, x.astype(np.float64))
    assert s.shape == (37, 91) and s.dtype == np.dtype(dtype).name
    assert_json_safe(s)


def test_eps_is_configurable():
    x = np.array([0.0, 1e-9, 1e-5, -1e-5, 1.0])
    assert tensor_stats(x).zeros == 2
    assert tensor_stats(x, eps=1e-4).zeros == 4
    assert tensor_stats(x, eps=0.0).zeros == 1


def test_zero_size_tensor():
    s = tensor_stats(np.zeros((0, 4), dtype=np.float32), name="empty")
    assert s.status == INSUFFICIENT_DATA and s.reason == "zero-size tensor"
    assert s.count == 0 and s.sparsity is None and s.mean is None and s.std is None
    assert s.l1 == 0.0 and s.l2 == 0.0
    assert_json_safe(s)


def test_nonfinite_values_are_counted_and_excluded():
    s = tensor_stats(np.array([1.0, np.nan, -2.0, np.inf, 0.0]))
    assert s.nonfinite == 2 and s.count == 5 and s.zeros == 1
    assert s.l1 == 3.0 and s.max_abs == 2.0
    assert s.mean == pytest.approx(-1 / 3)
    assert "non-finite" in s.reason
    assert_json_safe(s)
    all_nan = tensor_stats(np.full(4, np.nan, dtype=np.float16))
    assert all_nan.mean is None and all_nan.max_abs is None and all_nan.nonfinite == 4
    assert_json_safe(all_nan)


def test_unsupported_dtype_is_an_explicit_result():
    s = tensor_stats(np.array([1 + 2j]))
    assert s.status == UNSUPPORTED_DTYPE
    assert_json_safe(s)


def test_overall_combines_without_concatenating_and_equals_numpy(tmp_path):
    rng = np.random.default_rng(6)
    tensors = {"a": random_tensor(rng, np.float32, (50, 20)) + 4,
               "b": random_tensor(rng, np.float64, (333,)) * 100,
               "c": random_tensor(rng, np.int8, (7, 3)),
               "empty": np.zeros((0,), np.float32)}
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    summary = summarise_weight_file(path, chunk_elems=64)
    allx = np.concatenate([t.astype(np.float64).reshape(-1) for t in tensors.values()])
    assert_matches_numpy(summary.overall, allx)
    assert summary.overall.l2 == pytest.approx(
        math.sqrt(sum(t.l2**2 for t in summary.tensors)), rel=1e-15)
    assert summary.tensor("empty").status == INSUFFICIENT_DATA
    assert_json_safe(summary)


def test_pipeline_summaries_from_dicts_combine_like_files():
    rng = np.random.default_rng(7)
    xs = {"a": rng.normal(size=(40, 10)), "b": rng.normal(2, 3, size=(500,))}
    xs["b"][:100] = 0
    dicts = []
    for name, x in xs.items():
        ref = numpy_reference(x.reshape(-1))
        dicts.append({"name": name, "shape": list(x.shape), **ref})
    summary = weight_summary(dicts)
    assert_matches_numpy(summary.overall, np.concatenate([x.reshape(-1) for x in xs.values()]))
    assert summary.tensor("b").sparsity == 0.2
    with pytest.raises(ValueError):
        TensorStats.from_dict({**dicts[0], "count": 3})
    with pytest.raises(ValueError):
        TensorStats.from_dict({"shape": [2], "count": 2, "zeros": 3, "l1": 0, "l2": 0})
    with pytest.raises(ValueError):
        weight_summary([dicts[0], dicts[0]])
    empty = weight_summary([])
    assert empty.overall.count == 0 and empty.overall.mean is None
    assert_json_safe(empty)


def test_delta_between_versions():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(100, 10))
    a[a == 0] = 1.0
    b = rng.normal(size=(50,))
    b[b == 0] = 1.0
    v1 = weight_summary([tensor_stats(a, name="dense"), tensor_stats(b, name="bias"),
                         tensor_stats(np.ones(8), name="old_head"),
                         tensor_stats(np.zeros(4), name="zero")])
    a2 = a.copy()
    a2.reshape(-1)[:200] = 0.0  # 20% of 'dense' pruned: sparsity +20 points
    v2 = weight_summary([tensor_stats(a2, name="dense"),
                         tensor_stats(b.reshape(5, 10), name="bias"),
                         tensor_stats(np.ones(3), name="new_head"),
                         tensor_stats(np.ones(4), name="zero")])
    d = weight_delta(v1, v2)
    by = {t.name: t for t in d.tensors}
    assert d.added == ("new_head",) and d.removed == ("old_head",) and d.reshaped == ("bias",)
    assert by["dense"].sparsity_change_pp == pytest.approx(20.0)
    l1_a, l1_a2 = np.abs(a).sum(), np.abs(a2).sum()
    assert by["dense"].l1_change == pytest.approx(l1_a2 - l1_a)
    assert by["dense"].l1_relative_change == pytest.approx((l1_a2 - l1_a) / l1_a)
    l2_a, l2_a2 = np.sqrt((a * a).sum()), np.sqrt((a2 * a2).sum())
    assert by["dense"].l2_relative_change == pytest.approx((l2_a2 - l2_a) / l2_a)
    assert by["bias"].reshaped and by["bias"].l1_change == pytest.approx(0.0, abs=1e-12)
    assert by["zero"].l1_relative_change is None and by["zero"].l2_relative_change is None
    assert by["zero"].l1_change == 4.0 and by["zero"].sparsity_change_pp == -100.0
    total1 = np.abs(a).sum() + np.abs(b).sum() + 8
    total2 = np.abs(a2).sum() + np.abs(b).sum() + 3 + 4
    assert d.overall.l1_relative_change == pytest.approx((total2 - total1) / total1)
    assert d.overall.sparsity_change_pp == pytest.approx((200 / 1057 - 4 / 1062) * 100)
    assert_json_safe(d)
    assert weight_delta(v1, v1).overall.l2_change == 0.0
    assert all(t.status == OK for t in v1.tensors)


# --- per-feature weights -----------------------------------------------------------------



def _l1_logistic(C, seed=0):
    """A LogisticRegression with an L1 penalty (l1_ratio=1; penalty="l1" is deprecated),
    fitted on 8 features of which 3 carry signal."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 8))
    y = (1.5 * x[:, 0] - 2.0 * x[:, 1] + 0.7 * x[:, 2] + 0.3 * rng.normal(size=600) > 0)
    return LogisticRegression(l1_ratio=1.0, solver="liblinear", C=C).fit(x, y.astype(int))


def _per_feature_numpy(w, axis):
    """Plain numpy: move the feature axis first, then norms over everything else."""
    m = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(w.shape[axis], -1)
    l1 = np.abs(m).sum(axis=1)
    return l1, np.linalg.norm(m, axis=1), np.all(np.abs(m) <= 1e-8, axis=1), l1 / l1.sum()


def test_feature_weights_of_an_l1_logistic_regression_from_npz_equal_numpy(tmp_path):
    clf = _l1_logistic(C=0.05)
    path = tmp_path / "lr.npz"
    np.savez(path, coef=clf.coef_, intercept=clf.intercept_)
    assert clf.coef_.shape == (1, 8)
    fw = file_feature_weights(path, "coef", FEATURES, axis=-1)
    l1, l2, zero, share = _per_feature_numpy(clf.coef_, 1)
    assert fw.axis == 1 and fw.tensor == "coef"
    assert [f.feature for f in fw.features] == FEATURES
    assert [f.l1 for f in fw.features] == pytest.approx(l1.tolist(), rel=1e-12)
    assert [f.l2 for f in fw.features] == pytest.approx(l2.tolist(), rel=1e-12)
    assert [f.zero for f in fw.features] == zero.tolist()
    assert [f.importance for f in fw.features] == pytest.approx(share.tolist(), rel=1e-12)
    # the L1 penalty drove the noise features to exactly zero, the signal ones are used
    assert 0 < fw.nonzero == int((clf.coef_ != 0).sum()) < 8
    assert not any(fw.features[i].zero for i in (0, 1))
    assert_json_safe(fw)


def test_feature_weights_of_a_multiclass_coef_take_every_class_row():
    rng = np.random.default_rng(3)
    coef = rng.normal(size=(3, 8))
    coef[:, 5] = 0.0
    coef[1, 6] = 0.0  # zero in one class only: still used
    fw = feature_weights(coef, FEATURES, axis=1)
    l1, l2, zero, share = _per_feature_numpy(coef, 1)
    assert [f.l1 for f in fw.features] == pytest.approx(l1.tolist(), rel=1e-12)
    assert [f.l2 for f in fw.features] == pytest.approx(l2.tolist(), rel=1e-12)
    assert [f.importance for f in fw.features] == pytest.approx(share.tolist(), rel=1e-12)
    assert [f.feature for f in fw.features if f.zero] == ["f5"]
    assert fw.nonzero == 7 and sum(f.importance for f in fw.features) == pytest.approx(1.0)


def test_feature_weights_of_a_two_layer_network_in_safetensors_equal_numpy(tmp_path):
    rng = np.random.default_rng(4)
    w1 = rng.normal(size=(8, 16)).astype(np.float32)  # input axis = features
    w1[[2, 7], :] = 0.0
    w2 = rng.normal(size=(16, 1)).astype(np.float32)
    path = tmp_path / "mlp.safetensors"
    save_file({"layer0/kernel": w1, "layer0/bias": np.zeros(16, np.float32),
               "layer1/kernel": w2}, str(path))
    # chunks of 7 elements split the 16 weights of each feature across reads
    fw = file_feature_weights(path, "layer0/kernel", FEATURES, axis=0, chunk_elems=7)
    assert fw.tensor == "layer0/kernel" and fw.axis == 0
    l1, l2, zero, share = _per_feature_numpy(w1, 0)
    assert [f.l1 for f in fw.features] == pytest.approx(l1.tolist(), rel=1e-12)
    assert [f.l2 for f in fw.features] == pytest.approx(l2.tolist(), rel=1e-12)
    assert [f.importance for f in fw.features] == pytest.approx(share.tolist(), rel=1e-12)
    assert [f.feature for f in fw.features if f.zero] == ["f2", "f7"]
    assert fw.nonzero == 6
    # the same tensor with the features on its last axis, in memory, gives the same figures
    t = feature_weights(w1.T.copy(), FEATURES, axis=1, chunk_elems=5)
    assert [f.zero for f in t.features] == [f.zero for f in fw.features]
    assert [f.l1 for f in t.features] == pytest.approx([f.l1 for f in fw.features], rel=1e-12)
    with pytest.raises(WeightFileError, match="no tensor 'nope'"):
        file_feature_weights(path, "nope", FEATURES, axis=0)
    with pytest.raises(ValueError, match="length 16, the model declares 8"):
        file_feature_weights(path, "layer0/kernel", FEATURES, axis=1)
    with pytest.raises(WeightFileError, match="no tensor 'nope'"):
        np.savez(tmp_path / "w.npz", coef=w1)
        file_feature_weights(tmp_path / "w.npz", "nope", FEATURES, axis=0)


def test_feature_weights_refuse_a_wrong_axis_or_length():
    with pytest.raises(ValueError, match="axis 2 does not exist"):
        feature_weights(np.ones((2, 8)), FEATURES, axis=2)
    with pytest.raises(ValueError, match="length 7, the model declares 8 features"):
        feature_weights(np.ones((2, 7)), FEATURES, axis=1)
    with pytest.raises(ValueError, match="scalar"):
        feature_weights(np.float64(1.0), FEATURES, axis=0)


def test_feature_weights_eps_nonfinite_and_all_zero():
    w = np.array([[1e-9, -1e-9, np.nan, 2.0]])
    fw = feature_weights(w, ["a", "b", "c", "d"], axis=1)
    assert [f.zero for f in fw.features] == [True, True, False, False]
    # a zero feature's importance is exactly 0, the shares of the others add up to 1
    assert fw.features[2].l1 == 0.0 and [f.importance for f in fw.features] == [
        0.0, 0.0, 0.0, 1.0]
    assert [f.zero for f in feature_weights(w, list("abcd"), axis=1, eps=0.0).features] == [
        False, False, False, False]
    none = feature_weights(np.zeros((1, 3)), ["a", "b", "c"], axis=1)
    assert none.nonzero == 0 and all(f.importance is None for f in none.features)
    assert_json_safe(fw)


def test_feature_delta_between_a_light_and_a_strong_l1_fit():
    light = feature_weights(_l1_logistic(C=10.0).coef_, FEATURES, axis=1)
    strong = feature_weights(_l1_logistic(C=0.01).coef_, FEATURES, axis=1)
    used_light = {f.feature for f in light.features if not f.zero}
    used_strong = {f.feature for f in strong.features if not f.zero}
    assert used_strong < used_light  # the stronger lambda dropped features
    d = feature_delta(light, strong)
    assert set(d.zeroed) == used_light - used_strong and d.revived == ()
    back = feature_delta(strong, light)
    assert set(back.revived) == used_light - used_strong and back.zeroed == ()
    assert (d.nonzero_base, d.nonzero_candidate) == (len(used_light), len(used_strong))
    assert_json_safe(d)


def test_feature_delta_zeroed_top_k_and_shifts_by_hand():
    names = list("abcdefg")
    base = feature_weights(np.array([[7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 0.0]]), names, axis=1)
    cand = feature_weights(np.array([[7.0, 0.0, 5.0, 4.0, 3.0, 0.0, 1.0]]), names, axis=1)
    d = feature_delta(base, cand, top_k=5)
    assert d.zeroed == ("b", "f") and d.revived == ("g",)
    # f was zeroed too, but it was 6th in the base: only b was a top-5 feature
    assert [(z.feature, z.rank_base) for z in d.zeroed_top] == [("b", 2)]
    assert d.zeroed_top[0].importance_base == pytest.approx(6 / 27)
    assert feature_delta(base, cand, top_k=6).zeroed_top[1].feature == "f"
    by = {s.feature: s for s in d.shifts}
    assert by["b"].change == pytest.approx(-6 / 27)
    assert by["a"].change == pytest.approx(7 / 20 - 7 / 27)
    changes = [abs(s.change) for s in d.shifts]
    assert changes == sorted(changes, reverse=True) and d.shifts[0].feature == "b"
    assert len(feature_delta(base, cand, max_shifts=2).shifts) == 2
    assert feature_delta(base, base).shifts == () and feature_delta(base, base).zeroed == ()


