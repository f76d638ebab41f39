"""Both ECDFs behind a two-sample KS D computed from slot counts, and where D is attained:
what a page draws beside the D the drift report gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.monitoring.drift import KsPoints


@dataclass(frozen=True)
class KsCurves:
    """Both ECDFs at the reference's distinct points, and where D is attained: ``at`` is
    the point (index ``index``) with ``side`` "at" when F_ref - F_cur is largest there, or
    "below" when F_cur - F_ref is largest just below it (current values left of the
    point)."""

    points: np.ndarray
    reference: np.ndarray  # F_ref at each point
    current: np.ndarray    # F_cur at each point
    statistic: float
    index: int
    at: float
    side: str
    reference_at: float   # F_ref where D is attained (from that side)
    current_at: float     # F_cur where D is attained


def ks_curves(points: KsPoints, slot_counts: Any) -> KsCurves | None:
    """The two ECDFs behind ``ks_statistic_from_counts`` and the point where its D is
    attained (the same candidates, so ``statistic`` equals it bit for bit); None without
    reference points or current values."""
    c = np.asarray(slot_counts, dtype=np.int64)
    n1, n2 = int(points.sample.shape[0]), int(c.sum())
    if n1 == 0 or n2 == 0 or points.points.shape[0] == 0:
        return None
    cum = np.cumsum(c)
    at_point, below_point = cum[1::2], cum[0::2]
    ref_at = points.ref_cum
    ref_before = np.concatenate(([0], ref_at))
    plus = np.divide(ref_at, n1, dtype=np.float64) - np.divide(at_point, n2, dtype=np.float64)
    minus = (np.divide(below_point, n2, dtype=np.float64)
             - np.divide(ref_before, n1, dtype=np.float64))
    f_ref = np.divide(ref_at, n1, dtype=np.float64)
    f_cur = np.divide(at_point, n2, dtype=np.float64)
    j_plus, j_minus = int(np.argmax(plus)), int(np.argmax(minus))
    d_plus = float(plus[j_plus])
    d_minus = min(max(float(minus[j_minus]), 0.0), 1.0)
    last = points.points.shape[0] - 1
    if d_minus > d_plus:
        j = min(j_minus, last)
        return KsCurves(points.points, f_ref, f_cur, d_minus, j, float(points.points[j]),
                        "below", float(ref_before[j_minus] / n1),
                        float(below_point[j_minus] / n2))
    return KsCurves(points.points, f_ref, f_cur, d_plus, j_plus,
                    float(points.points[j_plus]), "at", float(f_ref[j_plus]),
                    float(f_cur[j_plus]))
