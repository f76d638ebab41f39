"""Embedding drift: the whitening basis held to a direct numpy computation (np.cov, eigh of
the fitting half, the held-out half whitened by hand), the whole-number sums of any split of
the rows to one pass, the chi-square test to scipy and to a hand-computed case, and under
the null to its nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from app.monitoring.embedding import (
    OFFSET,
    SCALE,
    EmbeddingBasis,
    embedding_matrix,
    embedding_shift,
    fit_embedding_basis,
    shift_sums,
)

DIM = 8


def vectors(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Correlated vectors: a random mixing of independent normals of unequal spread, plus
    ``shift`` along the first axis."""
    mix = np.random.default_rng(7).normal(size=(DIM, DIM))
    x = (rng.normal(size=(n, DIM)) * np.linspace(3, 0.5, DIM)) @ mix + 2.0
    x[:, 0] += shift * x[:, 0].std()
    return x


def test_basis_against_direct_eigh() -> None:
    x = vectors(np.random.default_rng(1), 4000)
    basis, reason = fit_embedding_basis("e", x)
    assert basis is not None and reason == ""
    order = np.random.default_rng(0).permutation(4000)
    fit, held = x[order[:2000]], x[order[2000:]]
    values, vectors_ = np.linalg.eigh(np.cov(fit.T))
    values, vectors_ = values[::-1], vectors_[:, ::-1]
    share = np.cumsum(values) / values.sum()
    k = int(np.argmax(share >= 0.99)) + 1
    assert basis.components == k and basis.explained == pytest.approx(share[k - 1])
    np.testing.assert_allclose(basis.mean, fit.mean(axis=0))
    # The fitting half whitened by W has the identity as covariance (signs aside).
    w = basis.whiten
    np.testing.assert_allclose(w @ np.cov(fit.T) @ w.T, np.eye(k), atol=1e-9)
    np.testing.assert_allclose(np.abs(w), np.abs(vectors_[:, :k].T / np.sqrt(values[:k, None])))
    z = np.clip(np.rint((held - fit.mean(axis=0)) @ w.T * SCALE), -OFFSET, OFFSET) / SCALE
    assert basis.n_reference == 2000
    np.testing.assert_allclose(basis.reference_mean, z.mean(axis=0))
    np.testing.assert_allclose(basis.reference_precision, np.linalg.inv(np.cov(z.T)), rtol=1e-6)
    assert EmbeddingBasis.from_dict(basis.to_dict()).to_dict() == basis.to_dict()


def test_isotropic_keeps_every_direction_and_degenerate_ones_are_dropped() -> None:
    rng = np.random.default_rng(2)
    basis, _ = fit_embedding_basis("e", rng.normal(size=(3000, 16)))
    assert basis is not None and basis.components == 16
    flat = np.column_stack([rng.normal(size=3000), rng.normal(size=3000), np.zeros(3000)])
    basis, _ = fit_embedding_basis("e", flat)
    assert basis is not None and basis.components == 2


def test_too_small_or_constant_reference_has_no_basis() -> None:
    basis, reason = fit_embedding_basis("e", np.ones((150, 4)))
    assert basis is None and "at least 200" in reason
    basis, reason = fit_embedding_basis("e", np.ones((500, 4)))
    assert basis is None and "does not vary" in reason


def test_sums_add_exactly_over_any_split() -> None:
    rng = np.random.default_rng(3)
    basis, _ = fit_embedding_basis("e", vectors(rng, 2000))
    assert basis is not None
    x = vectors(rng, 1001, shift=0.3)
    x[[5, 17]] = np.nan  # missing vectors are not counted
    whole = shift_sums(basis, x)
    assert whole.dtype == np.int64 and whole[0] == 999 and whole.shape == (1 + basis.components,)
    cuts = [0, 1, 250, 251, 700, 1001]
    parts = sum(shift_sums(basis, x[a:b]) for a, b in zip(cuts, cuts[1:], strict=False))
    np.testing.assert_array_equal(parts, whole)
    assert (whole[1:] >= 0).all()


def test_matrix_from_lists_and_missing() -> None:
    m = embedding_matrix([[1.0, 2.0], None, [3, 4]], 3, 2)
    np.testing.assert_array_equal(m[[0, 2]], [[1, 2], [3, 4]])
    assert np.isnan(m[1]).all()


def test_shift_hand_computed() -> None:
    # k = 2, reference mean 0, precision the identity, n_reference 100; a window of 25 rows
    # whose mean z is (0.3, 0.4): m2 = 0.25, v = 1/25 + 1/100 = 0.05, T = 5, chi2_2 sf(5) =
    # exp(-2.5); effect sqrt(0.25 - 2 * 0.05) = sqrt(0.15).
    basis = EmbeddingBasis("e", 2, np.zeros(2), np.eye(2), 1.0, 100, np.zeros(2), np.eye(2))
    sums = np.array([25, 25 * (OFFSET + 0.3 * SCALE), 25 * (OFFSET + 0.4 * SCALE)])
    r = embedding_shift(basis, sums, min_n=10)
    assert r.statistic == pytest.approx(5.0)
    assert r.pvalue == pytest.approx(math.exp(-2.5))
    assert r.mean_shift == pytest.approx(0.5)
    assert r.effect == pytest.approx(math.sqrt(0.15))
    assert embedding_shift(basis, sums, min_n=30).pvalue is None


def test_shift_against_scipy_and_detects_half_sd() -> None:
    rng = np.random.default_rng(4)
    basis, _ = fit_embedding_basis("e", vectors(rng, 5000))
    assert basis is not None
    x = vectors(rng, 1000, shift=0.5)
    r = embedding_shift(basis, shift_sums(basis, x), min_n=100)
    z = (shift_sums(basis, x)[1:] / 1000 - OFFSET) / SCALE - basis.reference_mean
    t = float(z @ basis.reference_precision @ z) / (1 / 1000 + 1 / basis.n_reference)
    assert r.statistic == pytest.approx(t)
    assert r.pvalue == pytest.approx(stats.chi2.sf(t, basis.components))
    assert r.pvalue < 1e-10 and r.effect > 0.35


def test_null_rate_is_nominal() -> None:
    rng = np.random.default_rng(5)
    basis, _ = fit_embedding_basis("e", vectors(rng, 5000))
    assert basis is not None
    p = np.array([embedding_shift(basis, shift_sums(basis, vectors(rng, 200)), 100).pvalue
                  for _ in range(400)])
    # Uniform p-values under no change: about 5% below 0.05 (binomial sd 1.1%), none tiny.
    assert 0.015 < (p < 0.05).mean() < 0.10
    assert (p < 1e-4).sum() == 0
