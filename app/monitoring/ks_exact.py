"""scipy's exact two-sided two-sample KS p-value, called without ``ks_2samp``'s wrapper, and
several at once on the machine's cores.

``scipy.stats.ks_2samp(method="auto")`` takes its exact path when both samples hold at most
10,000 values; that path is ``_attempt_exact_2kssamp(n1, n2, gcd, D, "two-sided")``, a
function of the two sizes and the raw D alone. Called directly with the same arguments it
returns the same floats, without sorting the samples again, without the array-API and NaN
wrappers, and without the warning ``ks_2samp`` raises when it falls back to the asymptotic
p-value (the caller sees the fallback in the result instead, so no thread has to catch
warnings, which is not thread-safe). Its costly part is a compiled lattice recursion of
about n1 x (2 D n2) cells that releases the GIL, so several features' p-values run in
parallel threads. tests/monitoring/test_monitoring_ks_exact.py holds every figure equal to
``ks_2samp``'s on thousands of cases, the fallback included.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class ExactP:
    """scipy's exact attempt: D snapped to the 1/lcm(n1, n2) lattice (the statistic
    ``ks_2samp`` reports on this path) and the p-value, or ``ok`` False where scipy gives up
    and falls back to the asymptotic p-value of that snapped D."""

    ok: bool
    statistic: float
    pvalue: float


@cache
def _scipy_exact() -> Callable[..., tuple[bool, float, float]] | None:
    """scipy's private exact attempt, where this scipy has it with the behaviour relied on
    (one case checked against ``ks_2samp`` itself); None otherwise, and callers then go
    through ``ks_2samp``."""
    try:
        from scipy.stats._stats_py import _attempt_exact_2kssamp as attempt
    except ImportError:
        return None
    a = np.arange(40.0)
    b = np.arange(25.0) * 1.3 + 7.5  # neither call warns: no filter to set (not thread-safe)
    want = stats.ks_2samp(a, b, method="exact")
    raw = stats.ks_2samp(a, b, method="asymp").statistic
    try:
        ok, d, p = attempt(40, 25, math.gcd(40, 25), float(raw), "two-sided")
    except Exception:  # noqa: BLE001 - another signature: not the function relied on
        return None
    if not ok or (float(d), float(np.clip(p, 0, 1))) != (float(want.statistic),
                                                         float(want.pvalue)):
        return None
    return attempt


def available() -> bool:
    """Whether the direct exact p-value is usable with this scipy."""
    return _scipy_exact() is not None


def exact_pvalue(n1: int, n2: int, d: float) -> ExactP:
    """scipy's exact two-sided p-value of raw statistic ``d`` between samples of ``n1`` and
    ``n2`` values (``ks_2samp``'s order: the first sample's size first)."""
    attempt = _scipy_exact()
    if attempt is None:
        raise RuntimeError("this scipy has no usable exact two-sample KS attempt")
    ok, snapped, p = attempt(int(n1), int(n2), math.gcd(int(n1), int(n2)), d, "two-sided")
    return ExactP(bool(ok), float(snapped), float(np.clip(p, 0, 1)) if ok else math.nan)


def _cost(case: tuple[int, int, float]) -> float:
    """Roughly the cells of scipy's recursion: the larger size times the band's width."""
    n1, n2, d = case
    return max(n1, n2) * min(n1, n2) * min(1.0, 2.0 * d)


def workers() -> int:
    """Threads for a batch: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def exact_pvalues(cases: Sequence[tuple[int, int, float]],
                  threads: int | None = None) -> list[ExactP]:
    """``exact_pvalue`` of each (n1, n2, d), in order. With more than one case and core the
    cases run on a pool of threads, the costliest first, so the cores finish together; the
    results are the same floats whatever the number of threads (each case is computed alone,
    by the same code)."""
    n = len(cases)
    available()  # checked once, on the caller's thread
    threads = min(workers() if threads is None else max(1, threads), n)
    if threads <= 1:
        return [exact_pvalue(*c) for c in cases]
    order = sorted(range(n), key=lambda i: _cost(cases[i]), reverse=True)
    out: list[Any] = [None] * n
    # a pool for the batch: nothing kept between requests, nothing inherited across a fork
    with ThreadPoolExecutor(threads, thread_name_prefix="modelmon-ks") as pool:
        futures = [(i, pool.submit(exact_pvalue, *cases[i])) for i in order]
        for i, f in futures:
            out[i] = f.result()
    return out


__all__ = ["ExactP", "available", "exact_pvalue", "exact_pvalues", "workers"]
