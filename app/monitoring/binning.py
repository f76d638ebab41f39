"""Binnings fitted once on a reference window and reused for every later window.

Drift is only comparable when every window is counted on the same bins, so a binning is a
small serialisable object (``to_dict``/``from_dict``) that the service stores next to the
reference. Counts always end with a bin for missing values, so the missing rate drifts
(and is reported) like any other bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from app.monitoring._result import JsonResult

DEFAULT_NUMERIC_BINS = 10
DEFAULT_MAX_CATEGORIES = 50


@dataclass(frozen=True, eq=False)
class SortedSample:
    """A numeric sample sorted once, so binning and KS can share one sort.

    ``values`` holds the finite values in ascending order; NaN and +/-inf are counted in
    ``n_missing`` (an infinite measurement is treated as missing, not as an extreme value).
    """

    values: np.ndarray
    n_missing: int

    @property
    def n_valid(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_total(self) -> int:
        return self.n_valid + self.n_missing


def as_float_array(values: Any) -> np.ndarray:
    """Numeric columns arrive as float, int, bool or object arrays with None for nulls."""
    x = np.asarray(values)
    if x.dtype.kind == "O":
        x = np.where(np.equal(x, None), np.nan, x).astype(np.float64)
    elif x.dtype.kind in "fiub":
        x = x.astype(np.float64, copy=False)
    else:
        raise TypeError(f"numeric feature expected, got dtype {x.dtype}")
    return x.reshape(-1)


def sorted_sample(values: np.ndarray | SortedSample) -> SortedSample:
    """Sort once; NaN sorts last and infinities sit at the ends, so slicing drops them."""
    if isinstance(values, SortedSample):
        return values
    x = np.sort(as_float_array(values))
    lo = int(np.searchsorted(x, -np.inf, side="right"))
    hi = int(np.searchsorted(x, np.inf, side="left"))
    finite = x[lo:hi]
    return SortedSample(values=finite, n_missing=int(x.shape[0] - finite.shape[0]))


def missing_rate(counts: np.ndarray) -> float | None:
    """Missing rate from binned counts (the last bin is always the missing bin)."""
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if c.size == 0 or total <= 0:
        return None
    return float(c[-1] / total)


@dataclass(frozen=True)
class NumericBinning(JsonResult):
    """Right-closed bins at reference quantiles: (-inf, e1], (e1, e2], ..., (ek, +inf), missing.

    ``edges`` are the interior edges only; the outer bins are open so values outside the
    reference range still land somewhere.
    """

    edges: tuple[float, ...]
    requested_bins: int = DEFAULT_NUMERIC_BINS
    kind: str = field(default="numeric", init=False)

    KIND: ClassVar[str] = "numeric"

    @property
    def n_bins(self) -> int:
        """Number of count slots, the missing bin included."""
        return len(self.edges) + 2

    @property
    def missing_index(self) -> int:
        return len(self.edges) + 1

    def counts(self, values: np.ndarray | SortedSample) -> np.ndarray:
        """Per-bin counts, last slot = missing. Sorted input costs O(bins log n)."""
        edges = np.asarray(self.edges, dtype=np.float64)
        if isinstance(values, SortedSample):
            v = values.values
            bounds = np.empty(self.n_bins, dtype=np.int64)  # values <= each edge, 0 and all
            bounds[0], bounds[-1] = 0, v.shape[0]
            bounds[1:-1] = np.searchsorted(v, edges, side="right")
            out = np.empty(self.n_bins, dtype=np.int64)
            np.subtract(bounds[1:], bounds[:-1], out=out[:-1])
            out[-1] = values.n_missing
            return out
        x = as_float_array(values)
        finite = np.isfinite(x)
        idx = np.searchsorted(edges, x[finite], side="left")
        out = np.zeros(self.n_bins, dtype=np.int64)
        out[:-1] = np.bincount(idx, minlength=len(self.edges) + 1)
        out[-1] = int(x.shape[0] - np.count_nonzero(finite))
        return out

    def labels(self) -> tuple[str, ...]:
        # + 0.0: an edge of -0.0 reads as 0.0 (which zero a quantile lands on varies by machine)
        bounds = ["-inf", *(repr(float(e) + 0.0) for e in self.edges), "+inf"]
        labels = [f"({bounds[i]}, {bounds[i + 1]}]" for i in range(len(bounds) - 1)]
        labels[-1] = labels[-1][:-1] + ")"
        return (*labels, "missing")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericBinning:
        if data.get("kind", cls.KIND) != cls.KIND:
            raise ValueError(f"not a numeric binning: kind={data.get('kind')!r}")
        edges = tuple(float(e) for e in data["edges"])
        if any(not np.isfinite(e) for e in edges) or any(
            b <= a for a, b in zip(edges, edges[1:], strict=False)
        ):
            raise ValueError("edges must be finite and strictly increasing")
        return cls(edges=edges, requested_bins=int(data.get("requested_bins", len(edges) + 1)))


def sorted_quantiles(sorted_values: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """np.quantile(method='inverted_cdf') on already sorted data, without its partition pass.

    Type 1 of Hyndman & Fan: the smallest value x with ECDF(x) >= q. Edges are therefore
    actual reference values, so with right-closed bins no reference bin is empty (a linear
    interpolated edge between two distinct values would create one). Same index arithmetic
    as numpy, so the result is identical to np.quantile's.
    """
    n = sorted_values.shape[0]
    q = np.asarray(probs, dtype=np.float64)
    virtual = n * q - 1
    prev = np.floor(virtual)
    idx = np.where(virtual - prev == 0, prev, prev + 1)
    return sorted_values[np.clip(idx, 0, n - 1).astype(np.intp)]


def fit_numeric_bins(
    ref: np.ndarray | SortedSample, n_bins: int = DEFAULT_NUMERIC_BINS
) -> NumericBinning:
    """Edges at the reference's 1/n .. (n-1)/n quantiles (numpy method 'inverted_cdf').

    Duplicate edges are merged and an edge at the reference maximum is dropped (its upper
    bin would be empty in the reference), so a feature with k distinct values gets at most k
    bins and a constant feature gets a single value bin. A few-valued feature (k <= n
    distinct values) gets one bin per value: quantile edges would merge its rarer values
    into one bin, where mass moving between them is invisible.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    s = sorted_sample(ref)
    if s.n_valid == 0 or n_bins == 1:
        return NumericBinning(edges=(), requested_bins=n_bins)
    v = s.values
    distinct = v[np.concatenate(([True], v[1:] != v[:-1]))]
    if distinct.shape[0] <= n_bins:
        return NumericBinning(edges=tuple(float(e) for e in distinct[:-1]),
                              requested_bins=n_bins)
    probs = np.arange(1, n_bins, dtype=np.float64) / n_bins
    q = np.unique(sorted_quantiles(s.values, probs))
    q = q[q < s.values[-1]]
    return NumericBinning(edges=tuple(float(e) for e in q), requested_bins=n_bins)


def category_key(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (np.generic,)):
        value = value.item()
    return str(value)


def _string_codes(x: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """categorical_codes of an object column holding only str and None (what ingest decodes),
    grouped by a dict in one pass instead of sorting the objects; None when anything else is
    in it."""
    first: dict[str, int] = {}
    seen = []
    for v in x.tolist():
        if v is None:
            seen.append(-1)
        elif type(v) is str:
            seen.append(first.setdefault(v, len(first)))
        else:
            return None
    keys = sorted(first)  # np.unique's order
    rank = np.empty(len(keys) + 1, dtype=np.int64)
    rank[[first[k] for k in keys]] = np.arange(len(keys))
    rank[-1] = -1  # missing stays -1
    row_code = rank[np.asarray(seen, dtype=np.int64).reshape(-1)]
    return keys, np.bincount(row_code[row_code >= 0], minlength=len(keys)), row_code


@dataclass(frozen=True, eq=False)
class Coded:
    """A categorical column already grouped (as a columnar reader's dictionary encoding
    gives it): the distinct keys (string forms, ascending, no repeats) and per row the index
    of its key, or -1 for missing. ``categorical_codes`` takes it as it is, so such a column
    is never turned back into Python objects; indexing it selects rows, like an array."""

    keys: tuple[str, ...]
    row_code: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.row_code.shape

    def __len__(self) -> int:
        return int(self.row_code.shape[0])

    def __getitem__(self, index: Any) -> Coded:
        return Coded(self.keys, self.row_code[index])

    def values(self) -> np.ndarray:
        """The column as an object array of its keys (None where missing)."""
        lookup = np.array([*self.keys, None], dtype=object)
        return lookup[self.row_code]


def categorical_codes(values: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Group a categorical column without a Python loop over rows.

    Returns (keys of the distinct non-missing values, per-distinct-value counts, per-row
    index into keys or -1 for missing). Values are identified by their string form, so the
    stored binning stays JSON-safe; None and NaN are missing.
    """
    if isinstance(values, Coded):
        present = values.row_code[values.row_code >= 0]
        return (list(values.keys), np.bincount(present, minlength=len(values.keys)),
                values.row_code)
    x = np.asarray(values)
    x = x.reshape(-1)
    if x.dtype.kind == "O":
        strings = _string_codes(x)
        if strings is not None:
            return strings
        missing = np.equal(x, None) | np.not_equal(x, x).astype(bool)
    elif x.dtype.kind in "fc":
        missing = np.isnan(x)
    else:
        missing = np.zeros(x.shape[0], dtype=bool)
    present = x[~missing]
    try:
        uniq, inv = np.unique(present, return_inverse=True)
    except TypeError:  # mixed types that do not order against each other
        uniq, inv = np.unique(present.astype(str), return_inverse=True)
    keys = [category_key(u) for u in uniq]
    row_code = np.full(x.shape[0], -1, dtype=np.int64)
    row_code[~missing] = inv.reshape(-1)
    return keys, np.bincount(inv.reshape(-1), minlength=len(keys)), row_code


@dataclass(frozen=True)
class CategoricalBinning(JsonResult):
    """One bin per reference category, then 'unseen' (other), then 'missing'.

    Categories beyond ``max_categories`` (least frequent in the reference) share the unseen
    bin, so an ID-like column does not explode into thousands of sparse bins.
    """

    categories: tuple[str, ...]
    kind: str = field(default="categorical", init=False)

    KIND: ClassVar[str] = "categorical"

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 2

    @property
    def unseen_index(self) -> int:
        return len(self.categories)

    @property
    def missing_index(self) -> int:
        return len(self.categories) + 1

    def counts(self, values: Any) -> np.ndarray:
        keys, key_counts, row_code = categorical_codes(values)
        index = {c: i for i, c in enumerate(self.categories)}
        bin_of_key = np.array([index.get(k, self.unseen_index) for k in keys], dtype=np.int64)
        out = np.zeros(self.n_bins, dtype=np.int64)
        np.add.at(out, bin_of_key, key_counts)
        out[-1] = int(np.count_nonzero(row_code < 0))
        return out

    def labels(self) -> tuple[str, ...]:
        return (*self.categories, "(unseen)", "missing")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalBinning:
        if data.get("kind", cls.KIND) != cls.KIND:
            raise ValueError(f"not a categorical binning: kind={data.get('kind')!r}")
        cats = tuple(str(c) for c in data["categories"])
        if len(set(cats)) != len(cats):
            raise ValueError("duplicate categories")
        return cls(categories=cats)


def fit_categorical_bins(
    ref: Any, max_categories: int | None = DEFAULT_MAX_CATEGORIES
) -> CategoricalBinning:
    """Categories seen in the reference (the most frequent ``max_categories``, ties by name)."""
    keys, key_counts, _ = categorical_codes(ref)
    merged: dict[str, int] = {}
    for k, c in zip(keys, key_counts.tolist(), strict=True):
        merged[k] = merged.get(k, 0) + c
    names = sorted(merged)
    if max_categories is not None and len(names) > max_categories:
        names = sorted(sorted(merged, key=lambda k: (-merged[k], k))[:max_categories])
    return CategoricalBinning(categories=tuple(names))


Binning = NumericBinning | CategoricalBinning


def binning_from_dict(data: dict[str, Any]) -> Binning:
    """Rebuild a stored binning of either kind."""
    kind = data.get("kind")
    if kind == NumericBinning.KIND:
        return NumericBinning.from_dict(data)
    if kind == CategoricalBinning.KIND:
        return CategoricalBinning.from_dict(data)
    raise ValueError(f"unknown binning kind {kind!r}")
