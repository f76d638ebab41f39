"""A batch's drift counts on a compiled profile's layout: each column's PSI bins and KS slots
(a small batch's numeric columns counted together, app/monitoring/slots.py), the PCA error
sums and the embedding slots, per group of rows (a bucket of a version), sparse."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.evaluation import cbpe
from app.evaluation.summaries import (
    ColumnLayout,
    CompiledProfile,
    DriftSummary,
    ModelShape,
    Rows,
    group_order,
    prediction_values,
)
from app.monitoring.binning import as_float_array
from app.monitoring.multivariate import error_sums, feature_matrix
from app.monitoring.slots import SLOT_COUNTER_ROWS, column_counts, counts_unsorted


def _column_values(shape: ModelShape, layout: ColumnLayout, rows: Rows) -> Any:
    values = (prediction_values(shape, rows)[1] if layout.is_prediction
              else rows.features.get(layout.name))
    if values is None or values.shape[0] != rows.n:
        values = (np.full(rows.n, np.nan) if layout.kind == "numeric"
                  else np.full(rows.n, None, dtype=object))
    return values


def counts_together(n: int) -> bool:
    """Whether a group of ``n`` rows counts its numeric columns together (below the size
    where each column is better counted alone without sorting it: BENCHMARKS.md)."""
    return n < SLOT_COUNTER_ROWS


def _counts(shape: ModelShape, cp: CompiledProfile, rows: Rows
            ) -> tuple[np.ndarray, np.ndarray]:
    """(non-zero slots, counts) of ``rows`` on the profile's layout, in ascending order: a
    small group's numeric columns all at once, the others column by column
    (app/monitoring/slots.py: a numeric column's PSI bins and KS slots in one pass)."""
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    together = cp.columns_counter if counts_together(rows.n) else None
    if together is not None and not together.picked:  # no numeric column to count at once
        together = None
    if together is not None:  # a small batch's numeric columns at once
        x = np.empty((len(together.picked), rows.n))
        for row, i in enumerate(together.picked):
            x[row] = as_float_array(_column_values(shape, cp.columns[i], rows))
        first_keys, first_counts = together.counts(x)
        keys, counts = [first_keys], [first_counts]
    for i, layout in enumerate(cp.columns):
        if together is not None and i in together.skip:
            continue
        counter = layout.slot_counter if counts_unsorted(rows.n, layout.ks) else None
        for offset, (slots, n) in zip((layout.psi_offset, layout.ks_offset), column_counts(
                layout.binning, layout.ks, _column_values(shape, layout, rows), counter),
                strict=False):  # a categorical column has no KS part
            keys.append(slots + offset)
            counts.append(n)
    if cp.pca is not None:  # the last slots: whole-number error sums, non-zero ones only
        sums = error_sums(cp.pca, feature_matrix(cp.pca, rows.features, rows.n))
        nz = np.flatnonzero(sums)
        keys.append(nz + cp.pca_offset)
        counts.append(sums[nz])
    more = cp.embeddings.counts(rows.features, rows.n)
    keys += more[0]
    counts += more[1]
    if not keys:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    k, n = np.concatenate(keys), np.concatenate(counts)
    if together is None:  # each column's slots, in layout order
        return k, n
    order = np.argsort(k, kind="stable")  # the columns counted together came first
    return k[order], n[order]


def drift_counts(shape: ModelShape, cp: CompiledProfile, rows: Rows, group: np.ndarray,
                 n_groups: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per group of rows (``group[i]`` in [0, n_groups)): (rows, non-zero slot indices in
    ascending order, their counts) on the profile's layout. Sparse, so that a small batch
    costs what its rows cost, not what the layout holds."""
    if n_groups == 1:
        return [(rows.n, *_counts(shape, cp, rows))]
    order, bounds = group_order(group, n_groups)
    ordered = rows if order is None else rows.take(order)
    return [(int(bounds[g + 1] - bounds[g]),
             *_counts(shape, cp, ordered.take(slice(bounds[g], bounds[g + 1]))))
            for g in range(n_groups)]


def drift_summaries(shape: ModelShape, cp: CompiledProfile, rows: Rows, group: np.ndarray,
                    n_groups: int) -> list[DriftSummary]:
    """One drift summary per group of rows."""
    out = []
    sums = cbpe.sums_of_groups(shape.task, cp.cbpe, rows.score, rows.probabilities, group,
                               n_groups)
    for (n, idx, val), s in zip(drift_counts(shape, cp, rows, group, n_groups), sums,
                                strict=True):
        counts = np.zeros(cp.size, dtype=np.int64)
        counts[idx] = val
        out.append(DriftSummary(cp.key, n, counts, s))
    return out
