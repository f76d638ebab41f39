"""The rule for a wrong prediction, by hand, and its scalar form equal to its vectorised one."""

from __future__ import annotations

import numpy as np
import pytest

from app.monitoring.wrong import BINARY, MULTICLASS, is_wrong, wrong

NAN = float("nan")


def test_binary_by_hand():
    score = np.array([0.9, 0.9, 0.1, 0.1, 0.5, 0.4999, NAN, NAN])
    label = np.array([1, 0, 1, 0, 1, 1, 1, 0])
    # positive at >= 0.5; a NaN score is wrong whatever the label
    assert wrong(BINARY, score, label).tolist() == [0, 1, 1, 0, 0, 1, 1, 1]


def test_multiclass_by_hand():
    p = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.0, 0.0, 0.0],
                  [NAN, 0.5, 0.5], [0.1, 0.1, 0.8]])
    label = np.array([1, 0, 1, 0, 1, 2])
    # ties to the first class; no probability mass, or a NaN, is wrong
    assert wrong(MULTICLASS, p, label).tolist() == [0, 0, 1, 1, 1, 0]


@pytest.mark.parametrize("task", [BINARY, MULTICLASS])
def test_scalar_form_equals_the_vectorised_one(task: str):
    rng = np.random.default_rng(4)
    n = 300
    if task == BINARY:
        p = rng.random(n)
        p[rng.random(n) < 0.1] = NAN
        y = rng.integers(0, 2, n).astype(float)
        one = [is_wrong(task, None if np.isnan(x) else float(x), t) for x, t in zip(p, y,
                                                                                 strict=True)]
    else:
        p = rng.dirichlet(np.ones(4), n)
        p[rng.random(n) < 0.1] = 0.0
        y = rng.integers(0, 4, n).astype(float)
        one = [is_wrong(task, x, t) for x, t in zip(p, y, strict=True)]
    assert wrong(task, p, y).astype(bool).tolist() == one


def test_regression_has_no_wrong_prediction():
    with pytest.raises(ValueError):
        wrong("regression", np.zeros(2), np.zeros(2))
