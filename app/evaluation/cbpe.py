"""The CBPE side of the summaries: a reference's calibration maps and realized metrics (the
``cbpe`` section of a profile), the per-bucket sums every summary path folds with them, and
their packed arrays (optional within packed format 1: a drift summary without them reads as
"sums unknown"). The statistic is app/monitoring/cbpe.py.

A profile's ``cbpe`` section: ``maps`` (one isotonic map per scored class: the binary score
alone, else each class's probability; an empty map is the identity), ``realized`` (the
reference's own accuracy, precision, recall and F1 from its labels), ``n_labeled``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.monitoring.cbpe import (
    AUC_SLOTS,
    CbpeSums,
    IsotonicMap,
    cbpe_sums,
    fit_calibration,
    realized,
)

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
# the fewest labeled reference rows a calibration is fitted on (10 held-out splits of 10%)
MIN_LABELED = 100


def reference_section(task: str, classes: tuple[str, ...], raw: np.ndarray | None,
                      labels: np.ndarray | None) -> dict[str, Any] | None:
    """The profile's ``cbpe`` section from the reference's raw scores (binary, shape (n,))
    or class probabilities (shape (n, k)) and its labels (class names, None where
    unlabeled); None for a regression, or without ``MIN_LABELED`` labeled rows."""
    if task not in (BINARY, MULTICLASS) or raw is None or labels is None:
        return None
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(v, -1) if v is not None else -1 for v in labels], dtype=np.int64)
    usable = (y >= 0) & (np.isfinite(raw) if raw.ndim == 1 else np.isfinite(raw).all(axis=1))
    if int(usable.sum()) < MIN_LABELED:
        return None
    r, yy = raw[usable], y[usable]
    if task == BINARY:
        maps = [fit_calibration(r, yy == 1)]
    else:
        maps = [fit_calibration(r[:, k], yy == k) for k in range(len(classes))]
    return {"maps": [m.to_dict() for m in maps], "realized": realized(len(classes), r, yy),
            "n_labeled": int(usable.sum())}


def maps_of(section: dict[str, Any] | None) -> tuple[IsotonicMap, ...] | None:
    if not section:
        return None
    return tuple(IsotonicMap.from_dict(m) for m in section["maps"])


def sums_of_rows(task: str, maps: tuple[IsotonicMap, ...] | None, score: np.ndarray | None,
                 probabilities: np.ndarray | None) -> CbpeSums | None:
    """The CBPE sums of a group of rows' predictions (None without maps)."""
    if maps is None:
        return None
    raw = score if task == BINARY else probabilities
    if raw is None:
        return None
    return cbpe_sums(maps, raw)


def sums_of_groups(task: str, maps: tuple[IsotonicMap, ...] | None, score: np.ndarray | None,
                   probabilities: np.ndarray | None, group: np.ndarray, n_groups: int
                   ) -> list[CbpeSums | None]:
    """``sums_of_rows`` per group of rows (``group[i]`` in [0, n_groups))."""
    if maps is None:
        return [None] * n_groups
    if n_groups == 1:
        return [sums_of_rows(task, maps, score, probabilities)]
    return [sums_of_rows(task, maps, None if score is None else score[group == g],
                         None if probabilities is None else probabilities[group == g])
            for g in range(n_groups)]


def arrays(s: CbpeSums | None) -> dict[str, np.ndarray]:
    """The packed arrays of CBPE sums: the matrices, and the histogram's non-empty slots."""
    if s is None:
        return {}
    nz = np.flatnonzero(s.rows.reshape(-1))
    return {"cbpe_m": s.matrix.astype(np.float64), "cbpe_v": s.variance.astype(np.float64),
            "cbpe_i": nz.astype(np.int64), "cbpe_r": s.rows.reshape(-1)[nz].astype(np.float64),
            "cbpe_e": s.expected.reshape(-1)[nz].astype(np.float64)}


def from_arrays(a: dict[str, np.ndarray]) -> CbpeSums | None:
    """CBPE sums from a payload's arrays; None where it holds none (written before them, or
    on a profile without maps). ValueError when they do not fit together."""
    if "cbpe_m" not in a:
        return None
    m, v, idx = a["cbpe_m"], a["cbpe_v"], a["cbpe_i"]
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2 or v.shape != m.shape:
        raise ValueError("the CBPE matrices are not square and alike")
    out = CbpeSums.empty(m.shape[0])
    size = out.rows.size
    if idx.ndim != 1 or a["cbpe_r"].shape != idx.shape or a["cbpe_e"].shape != idx.shape \
            or (idx.size and (int(idx.min()) < 0 or int(idx.max()) >= size)):
        raise ValueError("the CBPE histogram does not fit its slots")
    out.matrix[:] = m
    out.variance[:] = v
    out.rows.reshape(-1)[idx] = a["cbpe_r"]
    out.expected.reshape(-1)[idx] = a["cbpe_e"]
    return out


def added(total: CbpeSums | None, part: CbpeSums | None) -> CbpeSums | None:
    """``total`` with ``part`` added: unknown (None) once either is."""
    if total is None or part is None:
        return None
    total.add(part)
    return total


def empty(maps: tuple[IsotonicMap, ...] | None) -> CbpeSums | None:
    """The zero sums a window starts from (None without maps; one map: binary)."""
    if maps is None:
        return None
    return CbpeSums.empty(2 if len(maps) == 1 else len(maps))


__all__ = ["AUC_SLOTS", "added", "arrays", "empty", "from_arrays", "maps_of", "reference_section",
           "sums_of_groups", "sums_of_rows"]
