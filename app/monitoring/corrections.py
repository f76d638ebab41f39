"""Multiple-test corrections of p-values across features, and the KS results re-decided with
them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from app.monitoring._result import OK
from app.monitoring.drift import KsResult


def bonferroni(pvalues: Any) -> np.ndarray:
    """Family-wise control: p * m, capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    return np.minimum(p * p.size, 1.0)


def benjamini_hochberg(pvalues: Any) -> np.ndarray:
    """False-discovery-rate adjusted p-values, same as scipy.stats.false_discovery_control."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ps = p[order]
    i = np.arange(1, m + 1)
    ps *= m / i
    ps[::-1] = np.minimum.accumulate(ps[::-1])
    out = np.empty_like(ps)
    out[order] = ps
    return np.clip(out, 0, 1)


def correct_ks(
    results: Mapping[str, KsResult], method: Literal["bh", "bonferroni"] = "bh"
) -> dict[str, KsResult]:
    """Adjust p-values across features and re-decide drift with the adjusted values.

    Only results with status ok take part (m = their number); the others pass through.
    A result whose p-value was skipped takes part with its upper bound, which can only make
    the other features' adjusted p-values larger (both procedures are monotone).
    """
    if method not in ("bh", "bonferroni"):
        raise ValueError("method must be 'bh' or 'bonferroni'")
    names = [k for k, r in results.items() if r.status == OK and r.pvalue_bound is not None]
    raw = [results[k].pvalue_bound for k in names]
    adj = benjamini_hochberg(raw) if method == "bh" else bonferroni(raw)
    out = dict(results)
    for name, p_adj in zip(names, adj.tolist(), strict=True):
        r = results[name]
        out[name] = dataclasses.replace(
            r, pvalue_adjusted=float(p_adj), correction=method,
            drift=bool(r.statistic is not None and r.statistic > r.d_threshold
                       and p_adj < r.alpha),
        )
    return out


__all__ = ["benjamini_hochberg", "bonferroni", "correct_ks"]
