"""Shared by the weight statistics tests and the weight file tests: tensors of every dtype
and the plain-numpy figures both are held to."""

from __future__ import annotations

import numpy as np
import pytest

from app.monitoring import TensorStats

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
          np.uint8, np.bool_]
FEATURES = [f"f{i}" for i in range(8)]


def random_tensor(rng, dtype, shape):
    if np.dtype(dtype).kind == "f":
        x = rng.normal(size=shape) * 3
        x[rng.random(shape) < 0.2] = 0.0
        return x.astype(dtype)
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), size=shape).astype(dtype)


def numpy_reference(x64, eps=1e-8):
    """Plain numpy on the whole tensor, for comparison."""
    return dict(
        count=x64.size, zeros=int(np.sum(np.abs(x64) <= eps)),
        l1=float(np.abs(x64).sum()), l2=float(np.sqrt(np.sum(x64 * x64))),
        max_abs=float(np.abs(x64).max()), mean=float(x64.mean()), std=float(x64.std()),
    )


def assert_matches_numpy(s: TensorStats, x64: np.ndarray, eps=1e-8):
    ref = numpy_reference(x64.reshape(-1), eps)
    assert s.count == ref["count"] and s.zeros == ref["zeros"]
    assert s.sparsity == ref["zeros"] / ref["count"]
    for key in ("l1", "l2", "max_abs", "mean", "std"):
        assert getattr(s, key) == pytest.approx(ref[key], rel=1e-11, abs=1e-12), key
