"""Multivariate drift: the PCA basis and its reconstruction errors held to a direct numpy
computation on the raw rows (the covariance's eigenvectors, not the SVD the module uses),
the whole-number sums of any split of the rows to the direct mean and variance, the z test
to a hand computation and, under the null, to its nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from app.monitoring.multivariate import (
    QUANTUM,
    PcaBasis,
    error_sums,
    fit_pca_basis,
    pca_error_drift,
    quanta,
)

NAMES = ("a", "b", "c", "d")


def correlated(rng: np.random.Generator, n: int, rho: float = 0.8) -> np.ndarray:
    """a and b correlated by ``rho``, c a scaled and shifted normal, d lognormal."""
    a = rng.normal(size=n)
    b = rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n)
    return np.column_stack([a, b, 3 + 2 * rng.normal(size=n), rng.lognormal(size=n)])


def direct(x: np.ndarray, variance: float = 0.65) -> tuple[np.ndarray, np.ndarray, int]:
    """(held-out errors, fitted components, k) computed directly: standardise by the valid
    values' mean and population sd, impute 0, eigenvectors of the fitting half's
    covariance, errors as sqrt(|z|^2 - |V'z|^2)."""
    mean = np.nanmean(x, axis=0)
    sd = np.nanstd(x, axis=0)
    z = np.nan_to_num((x - mean) / np.where(sd > 0, sd, 1.0))
    order = np.random.default_rng(0).permutation(x.shape[0])
    fit, held = z[order[: x.shape[0] // 2]], z[order[x.shape[0] // 2:]]
    w, v = np.linalg.eigh(np.cov(fit, rowvar=False))
    w, v = w[::-1], v[:, ::-1]
    k = int(np.argmax(np.cumsum(w) / w.sum() >= variance) + 1)
    proj = held @ v[:, :k]
    e2 = np.einsum("ij,ij->i", held, held) - np.einsum("ij,ij->i", proj, proj)
    return np.sqrt(np.maximum(e2, 0)), v[:, :k], k


def test_basis_and_errors_match_a_direct_computation() -> None:
    x = correlated(np.random.default_rng(3), 4000)
    x[::17, 3] = np.nan  # missing values: imputed with the reference mean
    basis, reason = fit_pca_basis(NAMES, x)
    assert basis is not None and reason == ""
    e, v, k = direct(x)
    assert basis.components.shape == (4, k)
    # the same subspace: the projectors agree
    np.testing.assert_allclose(basis.components @ basis.components.T, v @ v.T, atol=1e-9)
    q = np.minimum(np.rint(e / QUANTUM), basis.cap) * QUANTUM
    assert basis.cap == math.ceil(np.quantile(e, 0.999) / QUANTUM)
    assert basis.n_reference == 2000
    assert basis.reference_mean == pytest.approx(q.mean(), rel=1e-12)
    assert basis.reference_var == pytest.approx(q.var(ddof=1), rel=1e-9)
    assert basis.reference_skew == pytest.approx(stats.skew(q), rel=1e-9)
    assert basis.explained >= 0.65


def test_sums_of_any_split_equal_the_direct_mean_and_variance() -> None:
    rng = np.random.default_rng(4)
    basis, _ = fit_pca_basis(NAMES, correlated(rng, 3000))
    assert basis is not None
    rows = correlated(rng, 1234, rho=-0.5)
    rows[5, 1] = np.nan
    rows[9, 0] = np.inf  # non-finite: missing
    z = (rows - basis.mean) / basis.scale
    z = np.where(np.isfinite(z), z, 0.0)
    r = z - z @ basis.components @ basis.components.T
    e = np.minimum(np.rint(np.linalg.norm(r, axis=1) / QUANTUM), basis.cap) * QUANTUM
    total = np.zeros(3, dtype=np.int64)
    for part in np.array_split(rows, [1, 100, 101, 700]):  # an empty part included
        total += error_sums(basis, part)
    assert total.dtype == np.int64 and total[0] == 1234
    assert total[1] * QUANTUM / total[0] == pytest.approx(e.mean(), rel=1e-12)
    n, s1, s2 = (float(v) for v in total)
    var = (s2 - s1 * s1 / n) / (n - 1) * QUANTUM ** 2
    assert var == pytest.approx(e.var(ddof=1), rel=1e-9)
    assert (error_sums(basis, rows) == total).all()  # whole numbers: order does not matter
    assert (quanta(basis, rows) <= basis.cap).all()


def test_z_test_by_hand() -> None:
    basis = PcaBasis(NAMES, np.zeros(4), np.ones(4), np.eye(4)[:, :1], 0.7, 10_000, 5000,
                     1.0, 0.25)
    n = 1000
    q_mean = 1.05  # the window's mean error
    sums = np.array([n, round(q_mean / QUANTUM * n), 0], dtype=np.int64)
    r = pca_error_drift(basis, sums, min_n=100)
    se = 0.5 * math.sqrt(1 / n + 1 / 5000)
    assert r.effect == pytest.approx((q_mean - 1.0) / 0.5, rel=1e-9)
    assert r.z == pytest.approx((q_mean - 1.0) / se, rel=1e-9)
    assert r.pvalue == pytest.approx(2 * stats.norm.sf(r.z), rel=1e-9)
    small = pca_error_drift(basis, np.array([50, 50 * 1024, 0]), min_n=100)
    assert small.status == "insufficient_data" and small.pvalue is None


def test_too_few_features_or_rows_have_no_basis() -> None:
    rng = np.random.default_rng(5)
    assert fit_pca_basis(("a",), rng.normal(size=(500, 1)))[0] is None
    basis, reason = fit_pca_basis(NAMES, correlated(rng, 150))
    assert basis is None and "at least 200 rows" in reason


def test_basis_round_trips_through_json() -> None:
    basis, _ = fit_pca_basis(NAMES, correlated(np.random.default_rng(6), 1000))
    assert basis is not None
    back = PcaBasis.from_dict(basis.to_dict())
    x = correlated(np.random.default_rng(7), 300)
    assert (error_sums(back, x) == error_sums(basis, x)).all()


def test_null_rate_is_nominal_and_a_correlation_flip_is_seen() -> None:
    """Stationary windows of 1,000 rows reject at about alpha (the reference mean's noise
    counted); a correlation flip of a and b with their marginals unchanged at once."""
    rng = np.random.default_rng(8)
    basis, _ = fit_pca_basis(NAMES, correlated(rng, 10_000))
    assert basis is not None
    p_null = [pca_error_drift(basis, error_sums(basis, correlated(rng, 1000)), 100).pvalue
              for _ in range(400)]
    assert 0.01 <= float(np.mean(np.array(p_null) < 0.05)) <= 0.10
    flipped = [pca_error_drift(basis, error_sums(basis, correlated(rng, 1000, -0.8)), 100)
               for _ in range(20)]
    assert all(f.pvalue is not None and f.pvalue < 1e-6 and f.effect > 0.5 for f in flipped)


def test_a_skewed_error_widens_the_tail_by_its_edgeworth_term() -> None:
    """p = 2 (sf(|z|) + phi(z) |skew / sqrt(n)| (z^2 - 1) / 6), by hand."""
    basis = PcaBasis(NAMES, np.zeros(4), np.ones(4), np.eye(4)[:, :1], 0.7, 10_000, 5000,
                     1.0, 0.25, 2.0)
    n = 100
    sums = np.array([n, round(1.2 / QUANTUM * n), 0], dtype=np.int64)
    r = pca_error_drift(basis, sums, min_n=100)
    z = 0.2 / (0.5 * math.sqrt(1 / n + 1 / 5000))
    edge = stats.norm.pdf(z) * (2.0 / math.sqrt(n)) * (z * z - 1) / 6
    assert r.pvalue == pytest.approx(2 * (stats.norm.sf(z) + edge), rel=1e-9)
    assert r.pvalue > 2 * stats.norm.sf(z)
