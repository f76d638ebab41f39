"""/metrics rendering: model-quality families from stored results, for many models.

    .venv/bin/python bench/bench_metrics.py [--models 100] [--features 30] [--cohorts 10]

Builds the snapshot the collector reads (one row per stored result: per model and version,
three feature metrics per feature, one per cohort, a few model-level ones) and times turning
it into Prometheus families and exposition text, twice the models as a baseline ratio (the
cost must grow linearly with the rows). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

from app.observability.metrics import build_families  # noqa: E402

LIMITS = {"features": 50, "cohorts": 20, "layers": 100}


def snapshot(models: int, features: int, cohorts: int) -> dict:
    rows = []
    for m in range(models):
        for v in ("v1", "v2"):
            base = {"model": f"model{m}", "version": v, "n": 1000, "detail": None,
                    "decision": "ok"}
            for f in range(features):
                for metric in ("feature_psi", "feature_ks_statistic", "feature_missing_ratio"):
                    rows.append({**base, "metric": metric, "subject": f"f{f}",
                                 "value": 0.01 * f,
                                 "detail": {"pvalue": 0.5} if "ks" in metric else None})
            for c in range(cohorts):
                rows.append({**base, "metric": "cohort_error_ratio",
                             "subject": f"region=r{c}", "value": 0.1,
                             "detail": {"ci_low": 0.05, "ci_high": 0.15}})
            for metric in ("calibration_ece", "error_ratio", "label_coverage",
                           "label_delay_p50_seconds", "label_delay_p90_seconds"):
                rows.append({**base, "metric": metric, "subject": "", "value": 0.2})
    return {"results": rows, "job_last_success": {}, "job_last_failed": {},
            "last_prediction": {}, "slo": {}, "versions": [], "weights": [], "deltas": []}


class Fixed(Collector):
    def __init__(self, fams: list) -> None:
        self.fams = fams

    def collect(self):  # noqa: ANN201
        return iter(self.fams)


def render(snap: dict) -> tuple[float, int, int]:
    t = time.perf_counter()
    fams = build_families(snap, LIMITS, 300.0)
    reg = CollectorRegistry()
    reg.register(Fixed(fams))
    text = generate_latest(reg)
    return time.perf_counter() - t, len(text), sum(len(f.samples) for f in fams)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--cohorts", type=int, default=10)
    a = ap.parse_args()
    one, five, fifteen = os.getloadavg()
    print(f"load average {one:.2f} {five:.2f} {fifteen:.2f}")
    for models in (a.models, 2 * a.models):
        snap = snapshot(models, a.features, a.cohorts)
        n = len(snap["results"])
        best = min(render(snapshot(models, a.features, a.cohorts)) for _ in range(3))
        print(f"{models} models x 2 versions x {a.features} features x {a.cohorts} cohorts: "
              f"{n:,} stored results -> {best[2]:,} samples, {best[1] / 1e6:.1f} MB, "
              f"{best[0]:.3f} s")


if __name__ == "__main__":
    main()
