"""Folding what a batch stored into bucket summaries, in the batch's own transaction.

A prediction batch adds, per (version, bucket) it touched, the predictions counted, their
drift counts on the version's current profile (if it has one) and the pairs it completed
(inline labels, labels that were waiting); a label batch adds the pairs its labels completed.
Each prediction and each pair is folded exactly once, at the moment it is stored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from app.evaluation.fold import summary_rows
from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    Rows,
    label_numbers,
    rows_from_records,
)
from app.ingest.rows import CompletedPair, Parsed, PredictionRow, StoredLabel
from app.storage.summaries import SummaryRow


def _loads(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, (str, bytes)) else v


@dataclass
class ModelColumns:
    """One model's rows of a batch as the summaries' columns; ``positions`` are their
    indices in the batch's rows."""

    positions: np.ndarray
    rows: Rows


def columns_of_rows(shapes: dict[int, ModelShape], rows: list[PredictionRow],
                    parsed: list[Parsed] | None = None) -> dict[int, ModelColumns]:
    """The complete validator's rows as columns: from their ``parsed`` values when given,
    else from the rows' JSON text."""
    where: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        where[r.model_id].append(i)
    out: dict[int, ModelColumns] = {}
    for model_id, at in where.items():
        rs = [rows[i] for i in at]
        ps = [parsed[i] for i in at] if parsed is not None else [
            Parsed(_loads(r.features), _loads(r.cohorts), _loads(r.probabilities), 0)
            for r in rs]
        out[model_id] = ModelColumns(np.asarray(at, dtype=np.int64), rows_from_records(
            shapes[model_id], [r.version_id for r in rs], [r.ts.timestamp() for r in rs],
            [p.features for p in ps], [p.cohorts for p in ps], [r.score for r in rs],
            [r.value for r in rs], [p.probabilities for p in ps],
            [r.gt_class for r in rs], [r.gt_value for r in rs],
            [r.ts.timestamp() if r.has_label else None for r in rs]))
    return out


def for_predictions(shapes: dict[int, ModelShape], rows: list[PredictionRow],
                    columns: dict[int, ModelColumns], duplicates: set[tuple[int, str]],
                    waiting: dict[tuple[int, str], StoredLabel],
                    profiles: dict[int, CompiledProfile], bucket_seconds: float, *,
                    thin: bool = False) -> dict[int, list[SummaryRow]]:
    """Summary rows per model for the batch's rows that were stored, i.e. all but
    ``duplicates``; a label that was waiting for a prediction replaces its
    inline one, as in the labels table. ``thin``: rows summarised where they were made
    (app/ingest/thin.py), of which only the pairs count here."""
    out: dict[int, list[SummaryRow]] = {}
    for model_id, mc in columns.items():
        cols, positions = mc.rows, mc.positions
        if duplicates:
            keep = np.array([rows[i].key not in duplicates for i in positions], dtype=bool)
            cols, positions = cols.take(keep), positions[keep]
        if waiting:
            at = [j for j, i in enumerate(positions) if rows[i].key in waiting]
            if at:
                stored = [waiting[rows[positions[j]].key] for j in at]
                label, delay = cols.label.copy(), cols.label_delay.copy()
                label[at] = label_numbers(shapes[model_id], [w.label_class for w in stored],
                                          [w.label_value for w in stored])
                delay[at] = np.array([w.ts.timestamp() for w in stored]) - cols.ts[at]
                cols = replace(cols, label=label, label_delay=delay)
        if thin:  # only the pairs: the predictions and their drift are counted elsewhere
            cols = cols.take(np.zeros(cols.n, dtype=bool) if cols.label is None
                             else ~np.isnan(cols.label))
        if cols.n:
            out[model_id] = summary_rows(shapes[model_id], cols, bucket_seconds,
                                          count_predictions=not thin,
                                          profiles={} if thin else profiles)
    return out


def for_pairs(shapes: dict[int, ModelShape], pairs: list[CompletedPair],
              bucket_seconds: float) -> dict[int, list[SummaryRow]]:
    """Summary rows per model for pairs completed by newly stored labels."""
    by_model: dict[int, list[CompletedPair]] = defaultdict(list)
    for p in pairs:
        by_model[p.model_id].append(p)
    out: dict[int, list[SummaryRow]] = {}
    for model_id, ps in by_model.items():
        # A pair adds to the outcome summary only, which reads no feature: the shape without
        # them spares building a column of missing values per feature.
        shape = replace(shapes[model_id], features=())
        rows = rows_from_records(
            shape, [p.version_id for p in ps], [p.ts.timestamp() for p in ps],
            [{} for _ in ps], [p.cohorts for p in ps], [p.score for p in ps],
            [p.value for p in ps], [_loads(p.probabilities) for p in ps],
            [p.label_class for p in ps], [p.label_value for p in ps],
            [p.label_ts.timestamp() for p in ps])
        out[model_id] = summary_rows(shape, rows, bucket_seconds, count_predictions=False,
                                      profiles={})
    return out
