"""Multivariate drift: PCA reconstruction error against the reference's own.

A change in how numeric features move together (a correlation that flips while every
feature's own distribution stays put) leaves each feature's PSI and KS where they were; a
PCA fitted on the reference no longer reconstructs the rows as well. The basis:

- each numeric feature standardised by the reference's mean and standard deviation of its
  valid values (a constant one by 1), a missing or non-finite value imputed with the
  reference's mean (0 once standardised), so every row has an error and a change in the
  missing rate moves it as any other change does;
- the reference's rows split in two halves by a fixed permutation (seed 0): the components
  are fitted on one, the fewest whose explained variance reaches ``VARIANCE`` (0.65); the
  reference's error distribution is measured on the other, so it is the error of rows the
  basis never saw, as every window's are (errors of the fitting rows are biased low);
- a row's error is the Euclidean norm of its standardised values minus their projection on
  the components, capped at the held-out errors' 0.999 quantile (a few outliers neither
  dominate a window's mean nor make its noise unknowable) and quantised to ``QUANTUM``
  (1/1024), so that a bucket keeps whole-number sums: n, the sum of q and of q squared
  (q = e / QUANTUM), which add up exactly in any order on every summary path.

The decision's statistic (``pca_error_drift``): the window's mean error against the held-out
reference's, the effect in the reference's standard deviations and the evidence a two-sided
z test at the window's n with the reference's own variance, counting the reference mean's
noise too (sd^2 / n + sd^2 / n_reference): the variance the null hypothesis gives, so a
stationary window is not flagged for its size; the tail carries the first Edgeworth term of
the reference errors' skewness at the window's n (skew / sqrt(n)), so a skewed error does not
page a small window by chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from app.monitoring._result import INSUFFICIENT_DATA, OK, JsonResult

VARIANCE = 0.65  # explained variance the components reach (NannyML's default)
QUANTUM = 1.0 / 1024  # the error's resolution in the sums
CAP_QUANTILE = 0.999
MIN_REFERENCE_ROWS = 100
SUM_SLOTS = 3  # n, sum of q, sum of q^2


@dataclass(frozen=True)
class PcaBasis:
    """A version's PCA basis and its reference's error distribution (module docstring):
    ``mean``, ``scale`` per feature, ``components`` (features x k), the error cap (in
    quanta), and the held-out reference errors' n, mean and variance (in error units)."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained: float
    cap: int
    n_reference: int
    reference_mean: float
    reference_var: float
    reference_skew: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "components": self.components.tolist(),
                "explained": self.explained, "cap": self.cap, "n_reference": self.n_reference,
                "reference_mean": self.reference_mean, "reference_var": self.reference_var,
                "reference_skew": self.reference_skew}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PcaBasis:
        p = len(d["features"])
        return cls(tuple(d["features"]), np.asarray(d["mean"], np.float64),
                   np.asarray(d["scale"], np.float64),
                   np.asarray(d["components"], np.float64).reshape(p, -1),
                   float(d["explained"]), int(d["cap"]), int(d["n_reference"]),
                   float(d["reference_mean"]), float(d["reference_var"]),
                   float(d.get("reference_skew", 0.0)))


def _standardised(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = np.asarray(x, np.float64) - mean  # a new array, changed in place from here
    z /= scale
    np.copyto(z, 0.0, where=~np.isfinite(z))  # missing: the mean
    return z


def _errors(z: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Each row's distance from the components' subspace. The components are orthonormal
    (rows of the SVD's V^T), so |z - CC^T z|^2 = |z|^2 - |C^T z|^2: one product of the rows
    with the k components, not two and a residual matrix (a tenth of the time)."""
    q = z @ components
    e2 = np.einsum("ij,ij->i", z, z) - np.einsum("ij,ij->i", q, q)
    return np.sqrt(np.maximum(e2, 0.0))


def quanta(basis: PcaBasis, x: np.ndarray) -> np.ndarray:
    """Each row's error in whole quanta, capped: ``x`` is rows x the basis' features."""
    e = _errors(_standardised(x, basis.mean, basis.scale), basis.components)
    return np.minimum(np.rint(e / QUANTUM), basis.cap).astype(np.int64)


def feature_matrix(basis: PcaBasis, columns: dict[str, Any], n: int) -> np.ndarray:
    """The basis' features of ``n`` rows from their columns (rows x features; NaN where a
    column is absent or a value missing)."""
    out = np.empty((n, len(basis.features)), order="F")  # filled column by column
    for j, name in enumerate(basis.features):
        values = columns.get(name)
        present = values is not None and values.shape[0] == n
        out[:, j] = np.asarray(values, dtype=np.float64) if present else np.nan
    return out


def error_sums(basis: PcaBasis, x: np.ndarray) -> np.ndarray:
    """(n, sum of q, sum of q^2) of the rows of ``x``, whole numbers (int64)."""
    q = quanta(basis, x)
    return np.array([q.shape[0], int(q.sum()), int((q * q).sum())], dtype=np.int64)


def fit_pca_basis(features: tuple[str, ...], x: np.ndarray, variance: float = VARIANCE
                  ) -> tuple[PcaBasis | None, str]:
    """The basis of the reference ``x`` (rows x features, NaN missing), or None and why."""
    if len(features) < 2:
        return None, "multivariate drift needs at least 2 numeric features"
    x = np.asarray(x, np.float64).reshape(-1, len(features))
    n, p = x.shape
    if n < 2 * MIN_REFERENCE_ROWS:
        return None, (f"multivariate drift needs a reference of at least "
                      f"{2 * MIN_REFERENCE_ROWS} rows")
    valid = np.where(np.isfinite(x), x, np.nan)
    counts = np.isfinite(x).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(np.nan_to_num(valid), axis=0) / np.maximum(counts, 1),
                    0.0)
    sd = np.sqrt(np.nansum(np.nan_to_num(valid - mean) ** 2, axis=0) / np.maximum(counts, 1))
    scale = np.where(sd > 0, sd, 1.0)
    order = np.random.default_rng(0).permutation(n)
    fit, held = order[: n // 2], order[n // 2:]
    z = _standardised(x[fit], mean, scale)
    z = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    share = np.cumsum(s * s) / max(float((s * s).sum()), 1e-300)
    k = int(np.searchsorted(share, variance - 1e-12) + 1)
    k = min(k, p - 1)  # at least one direction is left to err in
    components = vt[:k].T.copy()
    e = _errors(_standardised(x[held], mean, scale), components)
    cap = max(int(np.ceil(np.quantile(e, CAP_QUANTILE) / QUANTUM)), 1)
    q = np.minimum(np.rint(e / QUANTUM), cap) * QUANTUM
    skew = float(stats.skew(q)) if q.std() > 0 else 0.0
    return PcaBasis(tuple(features), mean, scale, components, float(share[k - 1]), cap,
                    int(held.shape[0]), float(q.mean()), float(q.var(ddof=1)), skew), ""


@dataclass(frozen=True)
class PcaErrorDrift(JsonResult):
    """A window's mean reconstruction error against the reference's: ``effect`` in the
    reference's standard deviations, the z statistic and its two-sided p-value (None below
    ``min_n`` rows or for a reference whose errors do not vary)."""

    n: int
    mean: float | None
    reference_mean: float
    reference_sd: float
    n_reference: int
    effect: float | None
    z: float | None
    pvalue: float | None
    status: str
    reason: str


def pca_error_drift(basis: PcaBasis, sums: np.ndarray, min_n: int) -> PcaErrorDrift:
    """The window's sums (``error_sums`` added up) decided against the basis' reference."""
    n, s1 = int(sums[0]), float(sums[1])
    sd = math.sqrt(basis.reference_var)
    base = {"n": n, "reference_mean": basis.reference_mean, "reference_sd": sd,
            "n_reference": basis.n_reference}
    if n < max(min_n, 1) or sd <= 0:
        reason = (f"insufficient data: n={n} < min_n={min_n}" if sd > 0 else
                  "the reference's reconstruction errors do not vary")
        return PcaErrorDrift(mean=s1 * QUANTUM / n if n else None, effect=None, z=None,
                             pvalue=None, status=INSUFFICIENT_DATA, reason=reason, **base)
    mean = s1 * QUANTUM / n
    se = sd * math.sqrt(1.0 / n + 1.0 / basis.n_reference)
    z = (mean - basis.reference_mean) / se
    return PcaErrorDrift(mean=mean, effect=(mean - basis.reference_mean) / sd, z=z,
                         pvalue=_two_sided(z, basis.reference_skew / math.sqrt(n)), status=OK,
                         reason="", **base)


def _two_sided(z: float, skew_of_mean: float) -> float:
    """Two-sided p-value of z for a mean whose skewness is ``skew_of_mean``: the normal tail
    plus the first Edgeworth term, phi(z) |skew| (z^2 - 1) / 6, taken on both sides (the
    larger of the two one-sided corrections), so a skewed error's tail is not
    underestimated at a small n."""
    t = abs(z)
    edge = stats.norm.pdf(t) * abs(skew_of_mean) * max(t * t - 1.0, 0.0) / 6.0
    return float(min(1.0, 2.0 * (stats.norm.sf(t) + edge)))
