"""PSI-bin and KS-slot counts of a numeric column without sorting it.

A bucket's drift summary counts a numeric column in the reference's PSI bins and in the
slots of its KS points (``KsPoints``: at and strictly between the sample's distinct points).
Both are counts against fixed cut points, which depend only on each value's place among
those points: sorting the values (n log n) finds it, and so does locating each value among
the points, which this does in a few linear passes.

``SlotCounter`` holds the union of the KS points and the bin edges (the cuts) and a uniform
grid over their range: each cell lists the cuts that fall in it. A value's cell comes from
arithmetic (``x * scale + offset``, truncated); since each of those steps is monotone (IEEE
operations round monotonically), a cut in an earlier cell is below the value and one in a
later cell above it, so only the few cuts of its own cell are compared. Whatever the
rounding, the count is exact; the grid only decides how many comparisons it takes, and a
column whose cuts crowd into a few cells (``usable`` False) is left to the sort.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.monitoring.binning import (
    CategoricalBinning,
    NumericBinning,
    as_float_array,
    sorted_sample,
)
from app.monitoring.drift import KsPoints

CELLS_PER_CUT = 4
MAX_CUTS_PER_CELL = 16
SLOT_COUNTER_ROWS = 2048


def counts_unsorted(n: int, ks: KsPoints | None) -> bool:
    """Whether ``n`` values of a numeric column count faster through a ``SlotCounter`` than
    sorted: from 2,048 values and a quarter of the KS points (its fixed cost is a pass over
    the 2J + 1 slots; below that, the sort's few-values path is cheaper: BENCHMARKS.md)."""
    return ks is not None and n >= SLOT_COUNTER_ROWS and 4 * n >= ks.points.shape[0]


class SlotCounter:
    """Counts of finite values in a binning's bins and a ``KsPoints``' slots, equal to
    ``binning.counts`` and ``ks.slot_counts`` of the sorted values."""

    def __init__(self, binning: NumericBinning, ks: KsPoints | None) -> None:
        edges = np.asarray(binning.edges, dtype=np.float64)
        points = np.empty(0) if ks is None else ks.points
        self.cuts = cuts = np.unique(np.concatenate((points, edges)))
        k = cuts.shape[0]
        # a value's slot among the cuts: 2j below cut j (and above j - 1), 2j + 1 at it;
        # cumulative counts at these bounds give the KS slots and the bins
        at_point = 2 * np.searchsorted(cuts, points) + 1
        self.ks_bounds = None if ks is None else np.concatenate(
            ([0], np.column_stack((at_point, at_point + 1)).reshape(-1), [2 * k + 1]))
        self.bin_bounds = np.concatenate(([0], 2 * np.searchsorted(cuts, edges) + 2,
                                          [2 * k + 1]))
        self.cells = max(1, CELLS_PER_CUT * k)
        span = float(cuts[-1]) - float(cuts[0]) if k else 0.0  # inf, quietly, past the max
        self.scale = self.cells / span if span > 0 else 0.0
        self.offset = 1.0 - float(cuts[0]) * self.scale if k else 1.0
        self.usable = bool(np.isfinite(self.scale) and np.isfinite(self.offset))
        if self.usable and k:
            # start[c]: the number of cuts in cells before c (cell 0: below the range);
            # int32 halves the table (4 entries a cut), which lives as long as the profile
            self.start = np.searchsorted(self._cell(cuts), np.arange(self.cells + 3)
                                         ).astype(np.int32)
            self.usable = int(np.diff(self.start).max()) <= MAX_CUTS_PER_CELL

    def _cell(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond the range: the first or the last cell
            t = x * self.scale
            t += self.offset
        np.clip(t, 0.0, self.cells + 1.0, out=t)
        return t.astype(np.intp)

    def cut_slots(self, x: np.ndarray) -> np.ndarray:
        """Each finite value's slot among the cuts (2j + 1 at cut j, 2j strictly below it
        and above cut j - 1)."""
        cuts = self.cuts
        if cuts.shape[0] == 0:
            return np.zeros(x.shape[0], dtype=np.int32)
        cell = self._cell(x)
        j = self.start[cell]
        end = self.start[1:][cell]
        in_cell = np.flatnonzero(j < end)  # values whose cell holds cuts
        act, ja, ea, xa = in_cell, j[in_cell], end[in_cell], x[in_cell]
        x_in = xa
        while act.size:  # past the cuts of the value's own cell that are below it
            step = cuts[ja] < xa
            ja += step
            j[act] = ja
            more = np.flatnonzero(step & (ja < ea))
            act, ja, ea, xa = act[more], ja[more], ea[more], xa[more]
        slot = 2 * j
        # at a cut: only where the value's cell holds one (a later cell's cuts are above it)
        slot[in_cell] += cuts[np.minimum(j[in_cell], cuts.shape[0] - 1)] == x_in
        return slot

    def counts(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the binning's counts, missing last; the KS slots' dense counts or None)."""
        x = as_float_array(values)
        finite = np.isfinite(x)
        n_valid = int(np.count_nonzero(finite))
        if n_valid < x.shape[0]:
            x = x[finite]
        dense = np.bincount(self.cut_slots(x), minlength=2 * self.cuts.shape[0] + 1)
        cum = np.concatenate(([0], np.cumsum(dense)))
        bins = np.empty(self.bin_bounds.shape[0], dtype=np.int64)
        bins[:-1] = np.diff(cum[self.bin_bounds])
        bins[-1] = values.shape[0] - n_valid
        ks = None if self.ks_bounds is None else np.diff(cum[self.ks_bounds])
        return bins, ks


def _nonzero(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(dense)
    return nz, dense[nz]


def column_counts(binning: NumericBinning | CategoricalBinning, ks: KsPoints | None,
                  values: np.ndarray, counter: SlotCounter | None = None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(non-zero slots, their counts) of a column in the binning's bins, then (a numeric
    column) in the KS points' slots: through ``counter`` when it is given and usable, else
    on the values sorted once."""
    if counter is not None and counter.usable:
        bins, slots = counter.counts(values)
        return [_nonzero(bins)] + ([] if slots is None else [_nonzero(slots)])
    if isinstance(binning, NumericBinning):
        values = sorted_sample(values)
    out = [_nonzero(binning.counts(values))]
    if ks is not None:
        out.append(ks.slot_counts(values.values))
    return out


class ColumnsCounter:
    """PSI-bin and KS-slot counts of several numeric columns of a small batch at once, equal
    to ``column_counts`` of each column (sorted): each column's values are located among its
    bin edges and its KS points (one ``searchsorted`` each, log J a value, cheaper than the
    sort below ``SLOT_COUNTER_ROWS``), and the rest (missing values, the at-a-point test,
    the offsets into the layout, the counting) is done for all the columns in one pass,
    where column by column it cost a dozen small numpy calls a column.

    ``columns``: (binning, KS points with at least one point, the binning's offset in the
    layout, the KS slots' offset) per column; ``picked``: which of a layout's columns they
    are (``of_layouts``)."""

    def __init__(self, columns: list[tuple[NumericBinning, KsPoints, int, int]],
                 picked: tuple[int, ...] = ()) -> None:
        self.picked = picked
        self.skip = frozenset(picked)
        self.edges = [np.asarray(b.edges, dtype=np.float64) for b, _, _, _ in columns]
        self.points = [ks.points for _, ks, _, _ in columns]
        if any(p.shape[0] == 0 for p in self.points):
            raise ValueError("every column needs at least one KS point")
        self.psi_offset = np.array([o for _, _, o, _ in columns], dtype=np.int64)[:, None]
        self.missing_key = np.array([o + b.missing_index for b, _, o, _ in columns],
                                    dtype=np.int64)[:, None]
        self.ks_offset = np.array([o for _, _, _, o in columns], dtype=np.int64)[:, None]

    @classmethod
    def of_layouts(cls, layouts: Sequence[Any]) -> ColumnsCounter:
        """The counter of a profile's numeric columns that have KS points (a layout's
        ``binning``, ``ks``, ``psi_offset`` and ``ks_offset``)."""
        picked = tuple(i for i, c in enumerate(layouts)
                       if c.ks is not None and c.ks.points.shape[0])
        return cls([(layouts[i].binning, layouts[i].ks, layouts[i].psi_offset,
                     layouts[i].ks_offset) for i in picked], picked)

    def counts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(layout slots in ascending order, their non-zero counts) of ``x``, float64 of
        shape (columns, rows), NaN or infinite where a value is missing."""
        j = np.empty(x.shape, dtype=np.intp)
        b = np.empty(x.shape, dtype=np.intp)
        near = np.empty(x.shape)  # the point at each value's place (the last one past it)
        for c, (points, edges) in enumerate(zip(self.points, self.edges, strict=True)):
            jc = points.searchsorted(x[c])  # side="left": the points strictly below
            j[c] = jc
            b[c] = edges.searchsorted(x[c])  # right-closed bins: the edges strictly below
            np.minimum(jc, points.shape[0] - 1, out=jc)
            points.take(jc, out=near[c])
        finite = np.isfinite(x)
        at = near == x
        slot = 2 * j
        slot += at
        slot += self.ks_offset
        b += self.psi_offset
        psi = np.where(finite, b, self.missing_key)
        keys, n = np.unique(np.concatenate((psi.reshape(-1), slot[finite])),
                            return_counts=True)
        return keys.astype(np.int64, copy=False), n.astype(np.int64, copy=False)
