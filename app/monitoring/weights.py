"""Weight statistics per tensor and overall, per input feature, and their deltas between
two versions, from arrays, float64 chunks or pipeline summaries.

Every statistic is accumulated over float64 chunks, so a caller that reads a file chunk by
chunk (app/monitoring/weightfiles.py) keeps memory near one chunk, never the whole file.
Means and variances are merged with Chan's parallel formula, which is what lets per-tensor
summaries sent by a pipeline be combined into exact overall figures without the weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.monitoring._result import (
    INSUFFICIENT_DATA,
    OK,
    UNSUPPORTED_DTYPE,
    JsonResult,
)

ZERO_EPS = 1e-8
CHUNK_ELEMS = 1 << 20


@dataclass(frozen=True)
class TensorStats(JsonResult):
    """Statistics of one tensor, or of all tensors together (the overall row).

    ``count`` is every element; ``zeros`` counts finite |w| <= eps; ``nonfinite`` counts
    NaN/inf, which are excluded from l1/l2/max_abs/mean/std and reported instead of
    poisoning them. std is the population standard deviation (ddof=0).
    """

    name: str
    shape: tuple[int, ...] | None
    dtype: str
    count: int
    zeros: int
    sparsity: float | None
    l1: float
    l2: float
    max_abs: float | None
    mean: float | None
    std: float | None
    nonfinite: int = 0
    status: str = OK
    reason: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorStats:
        """Build from a pipeline's per-tensor summary (shape/count/zeros/l1/l2/...)."""
        try:
            shape = tuple(int(s) for s in data["shape"]) if data.get("shape") is not None \
                else None
            count = int(data["count"]) if "count" in data else math.prod(shape or ())
            zeros = int(data["zeros"])
            nonfinite = int(data.get("nonfinite", 0))
            l1 = float(data["l1"])
            l2 = float(data["l2"])
            max_abs = _opt_float(data.get("max_abs"))
            mean = _opt_float(data.get("mean"))
            std = _opt_float(data.get("std"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid tensor summary: {exc!r}") from exc
        if shape is not None and math.prod(shape) != count:
            raise ValueError(f"count {count} does not match shape {shape}")
        if count < 0 or not 0 <= zeros + nonfinite <= count:
            raise ValueError("need 0 <= zeros + nonfinite <= count")
        for v in (l1, l2, max_abs, mean, std):
            if v is not None and not math.isfinite(v):
                raise ValueError("summary values must be finite")
        if l1 < 0 or l2 < 0 or (max_abs is not None and max_abs < 0) or (
            std is not None and std < 0
        ):
            raise ValueError("norms and std must be non-negative")
        finite = count - nonfinite
        if finite > 0 and (mean is None or std is None or max_abs is None):
            raise ValueError("mean, std and max_abs are required for a non-empty tensor")
        if finite == 0:
            mean = std = max_abs = None
        return cls(
            name=str(data.get("name", "")), shape=shape, dtype=str(data.get("dtype", "unknown")),
            count=count, zeros=zeros, sparsity=zeros / count if count else None,
            l1=l1, l2=l2, max_abs=max_abs, mean=mean, std=std, nonfinite=nonfinite,
            status=OK if count else INSUFFICIENT_DATA,
            reason="" if count else "zero-size tensor",
        )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


class _Moments:
    """float64 accumulator over chunks (or over tensors), merged with Chan's formula."""

    __slots__ = ("count", "nonfinite", "zeros", "l1", "sumsq", "max_abs", "n", "mean", "m2")

    def __init__(self) -> None:
        self.count = 0
        self.nonfinite = 0
        self.zeros = 0
        self.l1 = 0.0
        self.sumsq = 0.0
        self.max_abs: float | None = None
        self.n = 0  # finite elements
        self.mean = 0.0
        self.m2 = 0.0

    def merge(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def add_chunk(self, x: np.ndarray, eps: float) -> None:
        """x: a 1-D float64 chunk."""
        self.count += x.shape[0]
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(x.shape[0] - np.count_nonzero(finite))
            x = x[finite]
        if x.shape[0] == 0:
            return
        a = np.abs(x)
        self.zeros += int(np.count_nonzero(a <= eps))
        self.l1 += float(a.sum())
        m = float(a.max())
        self.max_abs = m if self.max_abs is None else max(self.max_abs, m)
        self.sumsq += float(np.dot(x, x))
        mean = float(x.mean())
        np.subtract(x, mean, out=a)
        self.merge(int(x.shape[0]), mean, float(np.dot(a, a)))

    def add_stats(self, s: TensorStats) -> None:
        self.count += s.count
        self.nonfinite += s.nonfinite
        self.zeros += s.zeros
        self.l1 += s.l1
        self.sumsq += s.l2 * s.l2
        if s.max_abs is not None:
            self.max_abs = s.max_abs if self.max_abs is None else max(self.max_abs, s.max_abs)
        n = s.count - s.nonfinite
        if n > 0 and s.mean is not None and s.std is not None:
            self.merge(n, s.mean, s.std * s.std * n)

    def result(self, name: str, shape: tuple[int, ...] | None, dtype: str) -> TensorStats:
        reason = ""
        status = OK
        if self.count == 0:
            status, reason = INSUFFICIENT_DATA, "zero-size tensor"
        elif self.nonfinite:
            reason = f"{self.nonfinite} non-finite values excluded from the statistics"
        has = self.n > 0
        return TensorStats(
            name=name, shape=shape, dtype=dtype, count=self.count, zeros=self.zeros,
            sparsity=self.zeros / self.count if self.count else None,
            l1=self.l1, l2=math.sqrt(self.sumsq), max_abs=self.max_abs if has else None,
            mean=self.mean if has else None,
            std=math.sqrt(max(self.m2, 0.0) / self.n) if has else None,
            nonfinite=self.nonfinite, status=status, reason=reason,
        )


def supported_dtype(dtype: np.dtype) -> bool:
    """Whether a numpy dtype converts to float64 losslessly enough to be measured."""
    return dtype.kind in "fiub" and dtype.itemsize <= 8


def _float64_chunks(a: np.ndarray, chunk_elems: int) -> Iterable[np.ndarray]:
    flat = a.reshape(-1)
    for start in range(0, flat.shape[0], chunk_elems):
        yield flat[start:start + chunk_elems].astype(np.float64)


def chunked_stats(chunks: Iterable[np.ndarray], eps: float, name: str,
                  shape: tuple[int, ...], dtype: str) -> TensorStats:
    """Statistics of one tensor given as 1-D float64 chunks, one after another, so a reader
    of a large file never holds more than one chunk."""
    acc = _Moments()
    for chunk in chunks:
        acc.add_chunk(chunk, eps)
    return acc.result(name, shape, dtype)


def tensor_stats(
    array: Any, eps: float = ZERO_EPS, name: str = "", *, chunk_elems: int = CHUNK_ELEMS
) -> TensorStats:
    """Statistics of one in-memory tensor, computed in float64 chunks."""
    a = np.asarray(array)
    shape = tuple(int(s) for s in a.shape)
    if not supported_dtype(a.dtype):
        return unsupported_tensor(name, shape, str(a.dtype), int(a.size))
    return chunked_stats(_float64_chunks(a, chunk_elems), eps, name, shape, str(a.dtype))


def unsupported_tensor(name: str, shape: tuple[int, ...], dtype: str, count: int
                       ) -> TensorStats:
    """The explicit result for a tensor whose dtype cannot be measured: it is listed, never
    silently dropped, and left out of the overall figures."""
    return TensorStats(
        name=name, shape=shape, dtype=dtype, count=count, zeros=0, sparsity=None, l1=0.0,
        l2=0.0, max_abs=None, mean=None, std=None, status=UNSUPPORTED_DTYPE,
        reason=f"dtype {dtype} is not supported",
    )


@dataclass(frozen=True)
class WeightSummary(JsonResult):
    tensors: tuple[TensorStats, ...]
    overall: TensorStats

    def tensor(self, name: str) -> TensorStats | None:
        return next((t for t in self.tensors if t.name == name), None)


def weight_summary(
    tensors: Iterable[TensorStats | Mapping[str, Any] | tuple[str, TensorStats]],
) -> WeightSummary:
    """Combine per-tensor stats (objects, pipeline dicts, or read_weight_file pairs).

    Overall L2 = sqrt(sum of squared L2s); mean/std merged exactly from counts, means and
    stds; no tensor data is concatenated.
    """
    items: list[TensorStats] = []
    for t in tensors:
        if isinstance(t, tuple):
            t = t[1]
        items.append(t if isinstance(t, TensorStats) else TensorStats.from_dict(t))
    names = [t.name for t in items]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    acc = _Moments()
    for t in items:
        if t.status != UNSUPPORTED_DTYPE:
            acc.add_stats(t)
    overall = acc.result("(overall)", None, "mixed")
    if not items:
        overall = TensorStats(**{**overall.__dict__, "reason": "no tensors"})
    return WeightSummary(tensors=tuple(items), overall=overall)


@dataclass(frozen=True)
class NormDelta(JsonResult):
    """Candidate minus base. Relative changes are None when the base value is 0."""

    name: str
    base_shape: tuple[int, ...] | None
    candidate_shape: tuple[int, ...] | None
    reshaped: bool
    l1_base: float
    l1_candidate: float
    l1_change: float
    l1_relative_change: float | None
    l2_base: float
    l2_candidate: float
    l2_change: float
    l2_relative_change: float | None
    sparsity_base: float | None
    sparsity_candidate: float | None
    sparsity_change_pp: float | None


@dataclass(frozen=True)
class WeightDelta(JsonResult):
    overall: NormDelta
    tensors: tuple[NormDelta, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    reshaped: tuple[str, ...]


def _relative(base: float, cand: float) -> float | None:
    return None if base == 0 else (cand - base) / abs(base)


def _norm_delta(b: TensorStats, c: TensorStats, name: str) -> NormDelta:
    sp = None
    if b.sparsity is not None and c.sparsity is not None:
        sp = (c.sparsity - b.sparsity) * 100.0
    return NormDelta(
        name=name, base_shape=b.shape, candidate_shape=c.shape,
        reshaped=b.shape != c.shape,
        l1_base=b.l1, l1_candidate=c.l1, l1_change=c.l1 - b.l1,
        l1_relative_change=_relative(b.l1, c.l1),
        l2_base=b.l2, l2_candidate=c.l2, l2_change=c.l2 - b.l2,
        l2_relative_change=_relative(b.l2, c.l2),
        sparsity_base=b.sparsity, sparsity_candidate=c.sparsity, sparsity_change_pp=sp,
    )


def weight_delta(base: WeightSummary, candidate: WeightSummary) -> WeightDelta:
    """How a candidate version's weights moved from the base: per tensor and overall."""
    b_by = {t.name: t for t in base.tensors}
    c_by = {t.name: t for t in candidate.tensors}
    common = [n for n in b_by if n in c_by]
    per = tuple(_norm_delta(b_by[n], c_by[n], n) for n in common)
    overall = _norm_delta(base.overall, candidate.overall, "(overall)")
    return WeightDelta(
        overall=NormDelta(**{**overall.__dict__, "reshaped": False}),
        tensors=per,
        added=tuple(n for n in c_by if n not in b_by),
        removed=tuple(n for n in b_by if n not in c_by),
        reshaped=tuple(d.name for d in per if d.reshaped),
    )


# --- per-feature weights ----------------------------------------------------------------

TOP_K_FEATURES = 5
MAX_IMPORTANCE_SHIFTS = 10


@dataclass(frozen=True)
class FeatureWeight(JsonResult):
    """The weights one input feature feeds, over every other axis of the tensor.

    ``zero``: every weight is finite with |w| <= eps (the feature is unused). ``importance``:
    the feature's L1 as a share of the L1 over the non-zero features, exactly 0 for a zero
    feature (so "importance == 0" and "zero" agree), None when every feature is zero.
    Non-finite weights are left out of the norms, as in TensorStats, and keep a feature
    non-zero.
    """

    feature: str
    l1: float
    l2: float
    zero: bool
    importance: float | None


@dataclass(frozen=True)
class FeatureWeights(JsonResult):
    tensor: str
    axis: int
    features: tuple[FeatureWeight, ...]
    nonzero: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureWeights:
        return cls(tensor=d["tensor"], axis=int(d["axis"]), nonzero=int(d["nonzero"]),
                   features=tuple(FeatureWeight(**f) for f in d["features"]))


def _feature_axis(shape: tuple[int, ...], axis: int, n_features: int) -> int:
    """The axis (made non-negative) after checking it exists and has one entry per feature."""
    if not shape:
        raise ValueError("a scalar has no feature axis")
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} does not exist in a tensor of shape {shape}")
    axis %= len(shape)
    if shape[axis] != n_features:
        raise ValueError(f"axis {axis} has length {shape[axis]}, the model declares "
                         f"{n_features} features")
    return axis


class _PerFeature:
    """Per-feature float64 sums over a tensor read in flat (C order) chunks: the element at
    flat position i belongs to feature (i // stride) % n, stride the size of the axes after
    the feature axis, so no chunk needs the rest of the tensor."""

    def __init__(self, shape: tuple[int, ...], axis: int, n: int, eps: float) -> None:
        self.stride = math.prod(shape[axis + 1:])
        self.n, self.eps, self.offset = n, eps, 0
        self.l1, self.sumsq = np.zeros(n), np.zeros(n)
        self.used = np.zeros(n, dtype=bool)

    def add_chunk(self, x: np.ndarray) -> None:
        """x: the next 1-D float64 chunk."""
        idx = (np.arange(self.offset, self.offset + x.shape[0]) // self.stride) % self.n
        self.offset += x.shape[0]
        finite = np.isfinite(x)
        a = np.where(finite, np.abs(x), 0.0)
        self.l1 += np.bincount(idx, weights=a, minlength=self.n)
        self.sumsq += np.bincount(idx, weights=a * a, minlength=self.n)
        self.used |= np.bincount(idx, weights=~finite | (a > self.eps), minlength=self.n) > 0

    def result(self, features: list[str] | tuple[str, ...], tensor: str, axis: int
               ) -> FeatureWeights:
        zero = ~self.used
        total = float(self.l1[self.used].sum())
        rows = tuple(FeatureWeight(feature=name, l1=float(self.l1[i]),
                                   l2=math.sqrt(float(self.sumsq[i])), zero=bool(zero[i]),
                                   importance=None if total <= 0 else 0.0 if zero[i]
                                   else float(self.l1[i]) / total)
                     for i, name in enumerate(features))
        return FeatureWeights(tensor=tensor, axis=axis, features=rows,
                              nonzero=sum(not r.zero for r in rows))


def feature_weights(array: Any, features: list[str] | tuple[str, ...], axis: int,
                    eps: float = ZERO_EPS, tensor: str = "", *,
                    chunk_elems: int = CHUNK_ELEMS) -> FeatureWeights:
    """Per-feature L1, L2, zero and importance share of a tensor whose ``axis`` is indexed by
    the input features, in ``features`` order, computed in float64 chunks. ValueError when
    the axis does not exist or its length is not the number of features."""
    a = np.asarray(array)
    if not supported_dtype(a.dtype):
        raise ValueError(f"dtype {a.dtype} is not supported")
    shape = tuple(int(d) for d in a.shape)
    return chunked_feature_weights(_float64_chunks(a, chunk_elems), shape, features, axis,
                                   eps, tensor)


def chunked_feature_weights(chunks: Iterable[np.ndarray], shape: tuple[int, ...],
                            features: list[str] | tuple[str, ...], axis: int,
                            eps: float = ZERO_EPS, tensor: str = "") -> FeatureWeights:
    """feature_weights of a tensor given as 1-D float64 chunks in flat (C) order, so a reader
    of a large file never holds more than one chunk. The axis is checked before the first
    chunk is asked for (ValueError), so a wrong axis costs no reading."""
    axis = _feature_axis(shape, axis, len(features))
    acc = _PerFeature(shape, axis, len(features), eps)
    for chunk in chunks:
        acc.add_chunk(chunk)
    return acc.result(features, tensor, axis)


def top_features(fw: FeatureWeights, k: int = TOP_K_FEATURES) -> tuple[str, ...]:
    """The k non-zero features of largest importance (ties by name)."""
    ranked = sorted((f for f in fw.features if not f.zero and f.importance is not None),
                    key=lambda f: (-f.importance, f.feature))  # type: ignore[operator]
    return tuple(f.feature for f in ranked[:k])


@dataclass(frozen=True)
class ImportanceShift(JsonResult):
    feature: str
    importance_base: float | None
    importance_candidate: float | None
    change: float


@dataclass(frozen=True)
class ZeroedFeature(JsonResult):
    """A feature the candidate zeroed that was among the base's top-k by importance."""

    feature: str
    importance_base: float
    rank_base: int


@dataclass(frozen=True)
class FeatureDelta(JsonResult):
    """How the candidate uses the input features against the base, over the features both
    know: zeroed (non-zero in base, zero in candidate), revived (the reverse), the top-k
    features of the base that the candidate zeroed, and the largest importance shifts."""

    nonzero_base: int
    nonzero_candidate: int
    zeroed: tuple[str, ...]
    revived: tuple[str, ...]
    zeroed_top: tuple[ZeroedFeature, ...]
    top_k: int
    shifts: tuple[ImportanceShift, ...]


def feature_delta(base: FeatureWeights, candidate: FeatureWeights, *,
                  top_k: int = TOP_K_FEATURES,
                  max_shifts: int = MAX_IMPORTANCE_SHIFTS) -> FeatureDelta:
    b = {f.feature: f for f in base.features}
    c = {f.feature: f for f in candidate.features}
    common = [n for n in b if n in c]
    zeroed = tuple(n for n in common if not b[n].zero and c[n].zero)
    revived = tuple(n for n in common if b[n].zero and not c[n].zero)
    top = top_features(base, top_k)
    zeroed_top = tuple(ZeroedFeature(feature=n, importance_base=b[n].importance or 0.0,
                                     rank_base=top.index(n) + 1)
                       for n in top if n in c and c[n].zero)
    shifts = [ImportanceShift(feature=n, importance_base=b[n].importance,
                              importance_candidate=c[n].importance,
                              change=(c[n].importance or 0.0) - (b[n].importance or 0.0))
              for n in common]
    shifts.sort(key=lambda s: (-abs(s.change), s.feature))
    return FeatureDelta(nonzero_base=base.nonzero, nonzero_candidate=candidate.nonzero,
                        zeroed=zeroed, revived=revived, zeroed_top=zeroed_top, top_k=top_k,
                        shifts=tuple(s for s in shifts[:max_shifts] if s.change != 0))
