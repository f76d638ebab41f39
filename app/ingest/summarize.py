"""Folding what a batch stored into bucket summaries, in the batch's own transaction.

A prediction batch adds, per (version, bucket) it touched, the predictions counted, their
drift counts on the version's current profile (if it has one) and the pairs it completed
(inline labels, labels that were waiting); a label batch adds the pairs its labels completed.
Each prediction and each pair is folded exactly once, at the moment it is stored.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    Rows,
    bucket_starts,
    drift_counts,
    outcome_summaries,
    pack_drift_counts,
    pack_outcome,
    rows_from_records,
)
from app.ingest.writer import N_STAGE, CompletedPair, StoredLabel
from app.storage.summaries import DRIFT, OUTCOME, SummaryRow


def _loads(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, (str, bytes)) else v


def _groups(rows: Rows, bucket_seconds: float) -> tuple[np.ndarray, list[tuple[int, float]]]:
    starts = bucket_starts(rows.ts, bucket_seconds)
    keys, group = np.unique(np.stack([rows.version_id.astype(np.float64), starts]), axis=1,
                            return_inverse=True)
    return group.reshape(-1), [(int(v), float(b)) for v, b in keys.T]


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _summary_rows(shape: ModelShape, rows: Rows, bucket_seconds: float, *,
                  count_predictions: bool,
                  profiles: dict[int, CompiledProfile]) -> list[SummaryRow]:
    group, keys = _groups(rows, bucket_seconds)
    out: list[SummaryRow] = []
    outcomes = outcome_summaries(shape, rows, group, len(keys),
                                 count_predictions=count_predictions)
    for (vid, start), o in zip(keys, outcomes, strict=True):
        out.append(SummaryRow(vid, _when(start), OUTCOME, "", o.n, pack_outcome(o)))
    if not count_predictions:
        return out
    for vid in {v for v, _ in keys}:
        cp = profiles.get(vid)
        if cp is None:
            continue  # no profile yet: drift is summarised once one exists
        mine = [g for g, (v, _) in enumerate(keys) if v == vid]
        at = np.flatnonzero(np.isin(group, mine))
        local = np.searchsorted(mine, group[at])
        for g, (n, idx, val) in zip(mine, drift_counts(shape, cp, rows.take(at), local,
                                                       len(mine)), strict=True):
            out.append(SummaryRow(vid, _when(keys[g][1]), DRIFT, cp.key, n,
                                  pack_drift_counts(n, cp.size, idx, val)))
    return out


def for_predictions(shapes: dict[int, ModelShape], new_rows: list[tuple],
                    waiting: dict[tuple[int, str], StoredLabel],
                    profiles: dict[int, CompiledProfile],
                    bucket_seconds: float) -> dict[int, list[SummaryRow]]:
    """Summary rows per model for newly stored predictions (writer.STAGE_COLUMNS rows)."""
    by_model: dict[int, list[tuple]] = defaultdict(list)
    for r in new_rows:
        by_model[r[0]].append(r)
    out: dict[int, list[SummaryRow]] = {}
    for model_id, rs in by_model.items():
        label_class, label_value, label_ts = [], [], []
        for r in rs:
            w = waiting.get((model_id, r[2]))
            if w is not None:  # the stored label, as the labels table holds it
                label_class.append(w.label_class)
                label_value.append(w.label_value)
                label_ts.append(w.ts.timestamp())
            else:  # an inline label is stored with the prediction's time
                label_class.append(r[12])
                label_value.append(r[13])
                label_ts.append(r[1].timestamp() if r[12] is not None or r[13] is not None
                                else None)
        parsed = [r[N_STAGE] if len(r) > N_STAGE else (_loads(r[5]), _loads(r[6]), _loads(r[9]))
                  for r in rs]
        rows = rows_from_records(
            shapes[model_id], [r[3] for r in rs], [r[1].timestamp() for r in rs],
            [p[0] for p in parsed], [p[1] for p in parsed], [r[7] for r in rs],
            [r[8] for r in rs], [p[2] for p in parsed], label_class, label_value, label_ts)
        out[model_id] = _summary_rows(shapes[model_id], rows, bucket_seconds,
                                      count_predictions=True, profiles=profiles)
    return out


def for_pairs(shapes: dict[int, ModelShape], pairs: list[CompletedPair],
              bucket_seconds: float) -> dict[int, list[SummaryRow]]:
    """Summary rows per model for pairs completed by newly stored labels."""
    by_model: dict[int, list[CompletedPair]] = defaultdict(list)
    for p in pairs:
        by_model[p.model_id].append(p)
    out: dict[int, list[SummaryRow]] = {}
    for model_id, ps in by_model.items():
        rows = rows_from_records(
            shapes[model_id], [p.version_id for p in ps], [p.ts.timestamp() for p in ps],
            [{} for _ in ps], [p.cohorts for p in ps], [p.score for p in ps],
            [p.value for p in ps], [_loads(p.probabilities) for p in ps],
            [p.label_class for p in ps], [p.label_value for p in ps],
            [p.label_ts.timestamp() for p in ps])
        out[model_id] = _summary_rows(shapes[model_id], rows, bucket_seconds,
                                      count_predictions=False, profiles={})
    return out
