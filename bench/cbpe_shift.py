"""Performance estimated before labels under a covariate shift (``bench_decisions.py --only
cbpe``): does the CBPE estimate track the realized value, and does the decision fire in the
window the shift completes, while no label has arrived?

A binary model whose scores are overconfident (score = expit(3x), truth P(y = 1 | x) =
expit(1.5x), which the shift leaves unchanged: a covariate shift), calibrated on a 10,000-row
labeled reference with x ~ N(0, 1.5). Traffic, n rows per 1-hour window in 5-minute buckets:
``windows`` stationary windows, then the shift ramps in over 12 buckets (bucket k of the ramp
draws k/12 of its rows from x ~ N(0.2, 0.3), near the boundary, where the model's positives
are barely more likely than not: precision falls), then ``windows`` fully shifted windows.
Each bucket is folded into CBPE sums by the service's own estimator; each window is decided
by the service's own check (app/evaluation/checks/performance.py, default policy) with no
label in it. Labels are drawn from the truth for the realized values only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.special import expit

from app.evaluation import cbpe
from app.evaluation.checks.performance import performance
from app.evaluation.policy import Thresholds
from app.evaluation.summaries import CompiledProfile, DriftSummary, OutcomeSummary
from app.evaluation.windows import MergedWindow
from app.monitoring.cbpe import CbpeSums, cbpe_sums, realized
from app.settings import Settings
from app.storage.registry import ModelRow

BUCKETS = 12
METRICS = ("accuracy", "precision", "recall", "f1")
T = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = ModelRow(id=1, name="sim", task="binary_classification", features=[],
                 cohort_keys=[], classes=["0", "1"], created_at=T)


def _draw(rng: np.random.Generator, n: int, shifted_share: float
          ) -> tuple[np.ndarray, np.ndarray]:
    shifted = rng.uniform(size=n) < shifted_share
    x = np.where(shifted, rng.normal(0.2, 0.3, n), rng.normal(0.0, 1.5, n))
    return expit(3.0 * x), (rng.uniform(size=n) < expit(1.5 * x)).astype(np.int64)


def _profile(rng: np.random.Generator) -> CompiledProfile:
    score, y = _draw(rng, 10_000, 0.0)
    section = cbpe.reference_section("binary_classification", ("0", "1"), score,
                                     np.array(["0", "1"], dtype=object)[y])
    return CompiledProfile.compile({"features": {}, "prediction": None, "cbpe": section},
                                   "sim")


def run(n: int, windows: int, seed: int) -> dict[str, Any]:
    """The estimate against the realized value per window, and where the decision fired."""
    rng = np.random.default_rng([seed, n, 26])
    cp = _profile(rng)
    assert cp.cbpe is not None and cp.cbpe_realized is not None
    th = Thresholds.from_settings(Settings(_env_file=None))
    shares = [0.0] * (windows * BUCKETS) + [k / BUCKETS for k in range(1, BUCKETS + 1)] \
        + [1.0] * (windows * BUCKETS)
    buckets = []
    for share in shares:
        score, y = _draw(rng, n // BUCKETS, share)
        buckets.append((cbpe_sums(cp.cbpe, score), score, y))
    out: dict[str, Any] = {"n": n, "reference": cp.cbpe_realized, "windows": []}
    complete = windows * BUCKETS + BUCKETS  # the bucket count when the shift has completed
    for end in range(BUCKETS, len(buckets) + 1):
        part = buckets[end - BUCKETS:end]
        sums = CbpeSums.empty(2)
        for s, _, _ in part:
            sums.add(s)
        w = MergedWindow(1, T, T, OutcomeSummary(n=sums.n),
                         DriftSummary("sim", sums.n, np.zeros(0, np.int64), sums))
        r = performance(MODEL, w, cp, th)
        truth = realized(2, np.concatenate([p[1] for p in part]),
                         np.concatenate([p[2] for p in part]))
        est = {d.metric: d.estimate.value for d in r.metrics if d.estimate is not None}
        out["windows"].append({"step": end - complete, "decision": r.decision,
                               "labels_in_window": w.outcome.labeled,
                               "estimate": est, "realized": truth})
    return out


def summary(r: dict[str, Any]) -> dict[str, Any]:
    """Mean absolute error of each estimate, and the first step (5-minute steps from the
    window the shift completes; negative: before it) with a warning or worse."""
    ws = r["windows"]
    mae = {m: float(np.mean([abs(w["estimate"][m] - w["realized"][m]) for w in ws
                             if w["realized"][m] is not None])) for m in METRICS}
    fired = [w["step"] for w in ws if w["decision"] in ("warning", "critical")]
    before = [w for w in ws if w["step"] <= -BUCKETS]
    return {"n": r["n"], "mae": mae,
            "first_flag_step": fired[0] if fired else None,
            "stationary_flagged": sum(w["decision"] in ("warning", "critical")
                                      for w in before) / max(len(before), 1),
            "labels_seen": sum(w["labels_in_window"] for w in ws),
            "precision_before": float(np.mean([w["realized"]["precision"] for w in before])),
            "precision_after": ws[-1]["realized"]["precision"],
            "estimate_after": ws[-1]["estimate"]["precision"]}


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\nCBPE under a covariate shift (precision falls; no label reaches the check): "
          "mean absolute error of the estimate against the realized value over every "
          "window; the first warning in 5-minute steps from the window the shift completes "
          "(0: that window; negative: during the ramp)")
    sizes = [r["n"] for r in rows]
    print("| predictions per window | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for m in METRICS:
        print(f"| MAE {m} | " + " | ".join(f"{r['mae'][m]:.4f}" for r in rows) + " |")
    for label, key, fmt in (("realized precision before", "precision_before", "{:.3f}"),
                            ("realized precision after", "precision_after", "{:.3f}"),
                            ("estimated precision after", "estimate_after", "{:.3f}"),
                            ("stationary windows flagged", "stationary_flagged", "{:.0%}")):
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in rows) + " |")
    print("| first warning (steps from completion) | " + " | ".join(
        "-" if r["first_flag_step"] is None else str(r["first_flag_step"]) for r in rows)
        + " |")
    print("| labels the check saw | " + " | ".join(str(r["labels_seen"]) for r in rows) + " |")
