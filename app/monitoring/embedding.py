"""Embedding drift: the whitened mean shift of an embedding feature against its reference.

An embedding feature is a vector of ``dim`` floats per prediction (DIM_MIN..DIM_MAX). Its
drift is a move of the vectors' mean, measured in the reference's own spread. The basis:

- the reference's complete rows (a missing vector is not a row of the test; its rate is the
  data-quality check's) split in two halves by a fixed permutation (seed 0), as multivariate
  drift splits them: the mean mu and the covariance are fitted on one half; the principal
  directions in order of variance, the fewest reaching ``VARIANCE`` of it (at most
  ``MAX_COMPONENTS``, none of a variance below 1e-10 of the largest), each scaled to unit
  standard deviation, make the whitening matrix W (k x dim);
- a row's whitened coordinates z = W (x - mu), clipped at +-``CLIP`` reference standard
  deviations and quantised to 1/``SCALE``, are kept as whole numbers q = round(z SCALE) +
  OFFSET in [0, 2 OFFSET], so a bucket keeps n and the k sums of q: whole numbers that add up
  exactly in any order on every summary path;
- the other half, whitened and quantised the same way, is the reference the windows are held
  against: its mean (near 0) and the inverse of its covariance (near the identity), so the
  basis' own noise is measured on rows it never saw.

The decision's statistic (``embedding_shift``): d, the window's mean of z minus the held-out
half's; the squared Mahalanobis length m2 = d' P d (P the held-out precision); under no change
d ~ N(0, C (1/n + 1/n_reference)), so m2 / (1/n + 1/n_reference) ~ chi2_k (the reference
mean's own noise counted). The effect is the shift's length in reference standard deviations,
with the part the noise alone gives taken off: sqrt(max(0, m2 - k (1/n + 1/n_reference))), so
a line on it does not grow with k at a small n; ``mean_shift`` is sqrt(m2) as measured.
Directions beyond the k components (less than 1 - VARIANCE of the variance together) are not
tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from app.monitoring._result import INSUFFICIENT_DATA, OK, JsonResult

DIM_MIN, DIM_MAX = 2, 1024
VARIANCE = 0.99  # share of the reference's variance the tested directions reach
MAX_COMPONENTS = 32  # at most this many directions (each one summary slot)
SCALE = 1024  # quanta per reference standard deviation
CLIP = 8  # |z| capped at this many reference standard deviations
OFFSET = CLIP * SCALE  # q = round(z * SCALE) + OFFSET lies in [0, 2 * OFFSET]
MIN_REFERENCE_ROWS = 100


@dataclass(frozen=True)
class EmbeddingBasis:
    """A version's whitening basis of one embedding feature (module docstring): ``mean``
    (dim), ``whiten`` (k x dim), the share of variance its k directions explain, and the
    held-out half's n, mean (k) and precision (k x k) in whitened units."""

    feature: str
    dim: int
    mean: np.ndarray
    whiten: np.ndarray
    explained: float
    n_reference: int
    reference_mean: np.ndarray
    reference_precision: np.ndarray

    @property
    def components(self) -> int:
        return int(self.whiten.shape[0])

    @property
    def slots(self) -> int:
        """Summary slots: n, then one sum per direction."""
        return 1 + self.components

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "dim": self.dim, "mean": self.mean.tolist(),
                "whiten": self.whiten.tolist(), "explained": self.explained,
                "n_reference": self.n_reference,
                "reference_mean": self.reference_mean.tolist(),
                "reference_precision": self.reference_precision.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingBasis:
        dim = int(d["dim"])
        w = np.asarray(d["whiten"], np.float64).reshape(-1, dim)
        k = w.shape[0]
        return cls(str(d["feature"]), dim, np.asarray(d["mean"], np.float64), w,
                   float(d["explained"]), int(d["n_reference"]),
                   np.asarray(d["reference_mean"], np.float64).reshape(k),
                   np.asarray(d["reference_precision"], np.float64).reshape(k, k))


def embedding_matrix(values: Any, n: int, dim: int) -> np.ndarray:
    """``n`` rows x ``dim`` floats from a column of vectors (a 2-D array, or a sequence of
    vectors and Nones); NaN rows where a vector is missing or not of length ``dim``."""
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype != object:
        if values.shape == (n, dim):
            return np.asarray(values, np.float64)
        return np.full((n, dim), np.nan)
    out = np.full((n, dim), np.nan)
    if values is None:
        return out
    for i, v in enumerate(values):
        if v is not None and i < n and len(v) == dim:
            out[i] = np.asarray(v, np.float64)
    return out


def _quanta(mean: np.ndarray, whiten: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The complete rows of ``x`` whitened, clipped and quantised: q in [0, 2 OFFSET]."""
    x = x[np.isfinite(x).all(axis=1)]
    z = (x - mean) @ whiten.T
    return (np.clip(np.rint(z * SCALE), -OFFSET, OFFSET) + OFFSET).astype(np.int64)


def shift_sums(basis: EmbeddingBasis, x: np.ndarray) -> np.ndarray:
    """(n, sum of q per direction) of the complete rows of ``x`` (rows x dim): whole numbers
    (int64, 1 + k of them)."""
    q = _quanta(basis.mean, basis.whiten, np.asarray(x, np.float64).reshape(-1, basis.dim))
    return np.concatenate([[q.shape[0]], q.sum(axis=0)]).astype(np.int64)


def _whitening(cov: np.ndarray, variance: float) -> tuple[np.ndarray, float]:
    """W (k x dim) of the top principal directions reaching ``variance``, and their share."""
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    total = float(values.clip(min=0).sum())
    share = np.cumsum(values.clip(min=0)) / total
    usable = int((values > values[0] * 1e-10).sum())
    k = min(int(np.searchsorted(share, variance - 1e-12) + 1), MAX_COMPONENTS, usable)
    return (vectors[:, :k] / np.sqrt(values[:k])).T.copy(), float(share[k - 1])


def fit_embedding_basis(feature: str, x: np.ndarray, variance: float = VARIANCE
                        ) -> tuple[EmbeddingBasis | None, str]:
    """The basis of the reference ``x`` (rows x dim; NaN rows missing), or None and why."""
    x = np.asarray(x, np.float64)
    dim = x.shape[1]
    x = x[np.isfinite(x).all(axis=1)]
    n = x.shape[0]
    if n < 2 * MIN_REFERENCE_ROWS:
        return None, (f"embedding drift of {feature!r} needs a reference of at least "
                      f"{2 * MIN_REFERENCE_ROWS} complete vectors, it has {n}")
    order = np.random.default_rng(0).permutation(n)
    fit, held = x[order[: n // 2]], x[order[n // 2:]]
    mean = fit.mean(axis=0)
    cov = np.cov(fit, rowvar=False, ddof=1)
    if not np.isfinite(cov).all() or float(np.trace(cov)) <= 0:
        return None, f"embedding feature {feature!r} does not vary in the reference"
    whiten, explained = _whitening(cov, variance)
    z = (_quanta(mean, whiten, held) - OFFSET) / SCALE
    held_cov = np.atleast_2d(np.cov(z, rowvar=False, ddof=1))
    return EmbeddingBasis(feature, dim, mean, whiten, explained, int(z.shape[0]),
                          z.mean(axis=0), np.linalg.pinv(held_cov)), ""


@dataclass(frozen=True)
class EmbeddingShift(JsonResult):
    """A window's whitened mean shift against the reference: ``effect`` (the shift's length
    in reference standard deviations, the noise's part taken off), ``mean_shift`` (as
    measured), the chi-square statistic on ``components`` degrees of freedom and its
    p-value; None below ``min_n`` complete vectors."""

    n: int
    components: int
    n_reference: int
    effect: float | None
    mean_shift: float | None
    statistic: float | None
    pvalue: float | None
    status: str
    reason: str


def embedding_shift(basis: EmbeddingBasis, sums: np.ndarray, min_n: int) -> EmbeddingShift:
    """The window's sums (``shift_sums`` added up) decided against the basis' reference."""
    n, k = int(sums[0]), basis.components
    base = {"n": n, "components": k, "n_reference": basis.n_reference}
    if n < max(min_n, 1):
        return EmbeddingShift(effect=None, mean_shift=None, statistic=None, pvalue=None,
                              status=INSUFFICIENT_DATA,
                              reason=f"insufficient data: n={n} < min_n={min_n}", **base)
    z = (np.asarray(sums[1:], np.float64) / n - OFFSET) / SCALE
    d = z - basis.reference_mean
    m2 = max(float(d @ basis.reference_precision @ d), 0.0)
    v = 1.0 / n + 1.0 / basis.n_reference
    return EmbeddingShift(effect=math.sqrt(max(m2 - k * v, 0.0)), mean_shift=math.sqrt(m2),
                          statistic=m2 / v, pvalue=float(stats.chi2.sf(m2 / v, k)),
                          status=OK, reason="", **base)
