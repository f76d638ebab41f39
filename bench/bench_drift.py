"""Drift statistics benchmark: fit bins + PSI + KS for 20 float64 features, 1M vs 1M rows.

Prints figures only (no timing assertions). The machine is shared and noisy, so it also times
baselines in the same run -- one np.sort of every array, and scipy.stats.ks_2samp alone --
and the ratios are what to compare across runs.

    .venv/bin/python bench/bench_drift.py [--rows N] [--features F] [--skip-scipy]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.monitoring.drift import drift_features  # noqa: E402


def make_data(rows: int, features: int, seed: int = 7) -> tuple[dict, dict]:
    """A realistic mix: unchanged features, small shifts, large shifts; 1% missing."""
    rng = np.random.default_rng(seed)
    ref, cur = {}, {}
    for i in range(features):
        r = rng.normal(size=rows)
        kind = i % 3
        shift = (0.0, 0.01, 0.5)[kind]
        c = rng.normal(loc=shift, size=rows)
        r[rng.random(rows) < 0.01] = np.nan
        c[rng.random(rows) < 0.01] = np.nan
        ref[f"f{i:02d}"] = r
        cur[f"f{i:02d}"] = c
    return ref, cur


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--skip-scipy", action="store_true", help="skip the ks_2samp baseline")
    args = ap.parse_args()

    ref, cur = make_data(args.rows, args.features)
    input_bytes = sum(a.nbytes for a in ref.values()) + sum(a.nbytes for a in cur.values())
    print(f"rows={args.rows} per window, features={args.features}, float64, 1% NaN")
    print(f"input arrays: {input_bytes / 2**20:.0f} MiB; cpus={os.cpu_count()}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}")

    # Memory first, in its own pass (tracemalloc slows allocation-heavy code a little).
    rss0 = maxrss_mib()
    tracemalloc.start()
    drift_features(ref, cur, workers=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = maxrss_mib()
    print(f"memory (workers=2): tracemalloc peak {peak / 2**20:.0f} MiB = "
          f"{peak / input_bytes:.3f}x input; ru_maxrss {rss0:.0f} -> {rss1:.0f} MiB "
          f"(delta {(rss1 - rss0) / (input_bytes / 2**20):.3f}x input)")

    def sort_all() -> None:
        for k in ref:
            np.sort(ref[k])
            np.sort(cur[k])

    t_sort = timed(sort_all, repeat=3)
    print(f"baseline  np.sort of all {2 * len(ref)} arrays (serial, best of 3): {t_sort:.2f} s")

    runs = [
        ("modelmon  fit bins + PSI + KS, exact p, workers=1", 1, True),
        ("modelmon  fit bins + PSI + KS, exact p, workers=2", 2, True),
        ("modelmon  fit bins + PSI + KS, decision p, workers=1", 1, False),
        ("modelmon  fit bins + PSI + KS, decision p, workers=2", 2, False),
    ]
    results = None
    for label, workers, exact in runs:
        repeat = 1 if exact else 3
        t = timed(lambda w=workers, e=exact: drift_features(ref, cur, workers=w, exact_pvalue=e),
                  repeat=repeat)
        best = "" if repeat == 1 else ", best of 3"
        print(f"{label}{best}: {t:.2f} s  ({t / t_sort:.2f}x sort baseline)")
        if workers == 2 and exact:
            results = drift_features(ref, cur, workers=2)

    if not args.skip_scipy:
        clean = {k: (ref[k][~np.isnan(ref[k])], cur[k][~np.isnan(cur[k])]) for k in ref}

        def scipy_ks() -> None:
            for a, b in clean.values():
                stats.ks_2samp(a, b)

        t_scipy = timed(scipy_ks)
        print(f"baseline  scipy.stats.ks_2samp alone, all features (serial): {t_scipy:.2f} s")
        a, b = clean["f01"]
        sp = stats.ks_2samp(a, b)
        assert results is not None
        ours = results["f01"].ks
        print(f"check f01: D {ours.statistic!r} vs scipy {float(sp.statistic)!r}; "
              f"p {ours.pvalue!r} vs scipy {float(sp.pvalue)!r}")

    assert results is not None
    bands: dict[str, int] = {}
    for r in results.values():
        bands[str(r.psi.band)] = bands.get(str(r.psi.band), 0) + 1
    n_drift = sum(1 for r in results.values() if r.ks is not None and r.ks.drift)
    print(f"PSI bands {bands}; KS drift (D>0.1 and BH-adjusted p<0.05): {n_drift} features")


if __name__ == "__main__":
    main()
