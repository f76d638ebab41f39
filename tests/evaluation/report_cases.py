"""A representative set of check reports, computed without a database, as the JSON the
REST reports serve (``to_dict()`` at the edge) and the findings the jobs store.

tests/evaluation/data/report_cases.json holds what the dict-built reports of f0d4a86 gave for
these cases (``python -m tests.evaluation.report_cases > tests/evaluation/data/
report_cases.json``, run at that commit); test_evaluation_results.py holds the typed results
equal to it, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from app.evaluation import horizon
from app.evaluation.checks import calibration, cohorts, drift, gap, labels, versions
from app.evaluation.counting import drift_summaries
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile
from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    OutcomeSummary,
    Rows,
    outcome_summary,
    prediction_values,
)
from app.evaluation.windows import MergedWindow
from app.storage.registry import ModelRow
from tests.evaluation import test_evaluation_compute as compute
from tests.evaluation import test_evaluation_summaries as summaries

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 1, tzinfo=UTC)
Case = dict[str, Any]


def plain(report: Any) -> Any:
    """The report as the REST layer serves it."""
    return report.to_dict() if hasattr(report, "to_dict") else report


def _case(report: Any, findings: Callable[[Any], list] | None = None) -> Case:
    out: Case = {"report": plain(report)}
    if findings is not None:
        out["findings"] = [dataclasses.asdict(f) for f in findings(report)]
    return out


def _drift(report: Any) -> Case:
    return _case(report, lambda r: drift.findings(r, {"source": "upload"}))


def _gap(report: Any) -> Case:
    return _case(report, gap.findings)


def _split(h: horizon.Horizon, short: Any, long: Any, seconds: float,
           findings: Callable[[Any], list]) -> Case:
    kept, moved = h.split(short, long, seconds)
    return {"too_small": h.too_small(short), "kept": _case(kept, findings),
            "moved": _case(moved, findings)}


def _calibration_findings(r: Any) -> list:
    return [] if r is None else calibration.findings(r)


def _gap_windows() -> tuple[MergedWindow, MergedWindow]:
    small = compute._sums_window({"a": (20, 9.0, 0.0), "b": (40, 4.0, 0.0)})
    big = compute._sums_window({"a": (600, 200.0, 0.0), "b": (900, 90.0, 0.0), None: (50, 5, 0)})
    return small, big


def binary_cases() -> dict[str, Case]:
    """The single-score model of test_evaluation_compute: four numeric features, one cohort
    key."""
    m, th = compute.MODEL, compute.TH
    ref = compute.rows(np.random.default_rng(0), 10_000)
    cp = CompiledProfile.compile(build_profile(m, ref.features,
                                               prediction_values(compute.SHAPE, ref), ref.n),
                                 "k")

    def w(seed: int, n: int, **kw: Any) -> MergedWindow:
        return compute.window(cp, compute.rows(np.random.default_rng(seed), n, **kw))

    oor = compute.rows(np.random.default_rng(6), 2000)
    oor.features["x2"] = np.where(np.random.default_rng(9).uniform(size=oor.n) < 0.1, 50.0,
                                  oor.features["x2"])
    empty = MergedWindow(1, T0, T1, OutcomeSummary())
    strict = Thresholds(psi_warning=0.01, psi_critical=0.02, min_n=10)
    out: dict[str, Case] = {
        "drift_ok": _drift(drift.drift(w(2, 1000), cp, th)),
        "drift_shift": _drift(drift.drift(w(3, 10_000, shift=0.5), cp, th)),
        "drift_quarter_shift": _drift(drift.drift(w(3, 10_000, shift=0.25), cp, th)),
        "drift_min_support": _drift(drift.drift(w(1, 300, shift=3.0), cp, th)),
        "drift_all_missing": _drift(drift.drift(w(4, 1000, missing=True), cp, th)),
        "drift_out_of_range": _drift(drift.drift(compute.window(cp, oor), cp, th)),
        "drift_below_min_n": _drift(drift.drift(w(5, 20), cp, th)),
        "drift_empty_window": _drift(drift.drift(empty, cp, th)),
        "drift_overrides_importance": _drift(drift.drift(
            w(3, 3000, shift=0.2), cp, th, {"x0": strict, "x3": strict},
            {"x0": 0.5, "x1": 0.0, "x2": None})),
        "calibration_small": _case(calibration.calibration(m, w(5, 200), th),
                                   calibration.findings),
        "calibration_ok": _case(calibration.calibration(m, w(5, 5000), th),
                                calibration.findings),
        "calibration_sharp": _case(calibration.calibration(m, w(5, 5000, sharpen=True), th),
                                   calibration.findings),
        "calibration_bins_15": _case(calibration.calibration(m, w(5, 5000), th, 15),
                                     calibration.findings),
        "calibration_empty": _case(calibration.calibration(m, empty, th),
                                   calibration.findings),
        "calibration_tiny_line": _case(calibration.calibration(
            m, w(5, 3000), Thresholds(ece_warning=1e-9, ece_critical=1e-8)),
            calibration.findings),
        "cohorts_steady": _case(cohorts.cohorts(m, w(6, 5000), th), cohorts.findings),
        "cohorts_worse": _case(cohorts.cohorts(m, w(6, 5000, seg_error=0.35), th),
                               cohorts.findings),
        "cohorts_few": _case(cohorts.cohorts(m, w(6, 120), th), cohorts.findings),
        "cohorts_key_override": _case(cohorts.cohorts(
            m, w(6, 5000, seg_error=0.3), th, {"seg": Thresholds(cohort_min_n=10,
                                                                  alpha_warning=0.2)}),
            cohorts.findings),
        "cohorts_empty": _case(cohorts.cohorts(m, empty, th), cohorts.findings),
        "overall_error": _case(cohorts.overall_error(m, w(6, 500)), cohorts.overall_findings),
        "overall_error_none": _case(cohorts.overall_error(m, empty), cohorts.overall_findings),
        "labels": _case(labels.label_stats(w(7, 500), th), labels.findings),
        "labels_empty": _case(labels.label_stats(empty, th), labels.findings),
    }
    out.update(_gap_cases(m, th))
    out.update(_horizon_cases(m, th, w, cp))
    return out


def _gap_cases(m: ModelRow, th: Any) -> dict[str, Case]:
    small, big = _gap_windows()
    training = {"validation_error": 0.1,
                "cohort_validation_error": {"seg=a": 0.2, "seg=b": 0.05, "seg=zz": 0.1,
                                            "other=x": 0.3}}
    unknown = MergedWindow(1, T0, T1, OutcomeSummary(n=10, labeled=10, errors=None,
                                                     squares=None))
    reg = dataclasses.replace(m, task="regression")
    return {
        "gap_small": _gap(gap.generalization_gap(m, small, th, training)),
        "gap_big": _gap(gap.generalization_gap(m, big, th, training)),
        "gap_cohorts_only": _gap(gap.generalization_gap(
            m, big, th, {"cohort_validation_error": {"seg=b": 0.0}})),
        "gap_none": _gap(gap.generalization_gap(m, big, th, {})),
        "gap_unknown_sums": _gap(gap.generalization_gap(m, unknown, th, training)),
        "gap_regression": _gap(gap.generalization_gap(reg, big, th, training)),
        "gap_empty": _gap(gap.generalization_gap(m, MergedWindow(1, T0, T1, OutcomeSummary()),
                                                 th, training)),
    }


def _horizon_cases(m: ModelRow, th: Any, w: Callable[..., MergedWindow],
                   cp: CompiledProfile) -> dict[str, Case]:
    short_d, long_d = w(1, 300, shift=3.0), w(1, 5000, shift=3.0)
    training = {"validation_error": 0.1, "cohort_validation_error": {"seg=a": 0.2,
                                                                    "seg=b": 0.05}}
    small, big = _gap_windows()
    return {
        "horizon_drift": _split(horizon.DRIFT, drift.drift(short_d, cp, th),
                                drift.drift(long_d, cp, th), 86_400.0,
                                lambda r: drift.findings(r, {"source": "baseline"})),
        "horizon_drift_nothing_moves": _split(horizon.DRIFT, drift.drift(w(2, 1000), cp, th),
                                              drift.drift(w(2, 5000), cp, th), 3600.0,
                                              lambda r: drift.findings(r, {})),
        "horizon_calibration": _split(
            horizon.CALIBRATION, calibration.calibration(m, w(5, 200), th),
            calibration.calibration(m, w(5, 5000), th), 86_400.0, _calibration_findings),
        "horizon_calibration_stays": _split(
            horizon.CALIBRATION, calibration.calibration(m, w(5, 200), th),
            calibration.calibration(m, w(5, 201), th), 86_400.0, _calibration_findings),
        "horizon_cohorts": _split(horizon.COHORTS, cohorts.cohorts(m, w(6, 120), th),
                                  cohorts.cohorts(m, w(6, 5000, seg_error=0.35), th),
                                  86_400.0, cohorts.findings),
        "horizon_gap": _split(horizon.GAP, gap.generalization_gap(
            m, MergedWindow(1, T0, T1, OutcomeSummary()), th, training),
            gap.generalization_gap(m, big, th, training), 86_400.0, gap.findings),
        "horizon_gap_partly": _split(horizon.GAP, gap.generalization_gap(
            m, small, Thresholds(min_n=30, cohort_min_n=30, gap_min_n=30), training),
            gap.generalization_gap(m, big, th, training), 7200.0, gap.findings),
    }


def task_cases(task: str, seed: int) -> dict[str, Case]:
    """The merged windows of test_evaluation_summaries: missing values, ties, a constant
    column, categories unseen in the reference, a missing cohort value, late labels."""
    rng = np.random.default_rng(seed)
    m = summaries.model(task)
    cp = summaries.reference(rng, m, (50, 10_000)[seed % 2])
    n = 900
    d = summaries.data(rng, n, task, shift=0.3)
    labeled = rng.random(n) < 0.7
    w = summaries.merged_window(rng, m, cp, d, labeled, rng.exponential(600, n))
    th = summaries.TH
    # the label delays' KLL sketch is exact up to 200 labels (randomized above)
    few = summaries.merged_window(rng, m, cp, d, labeled & (np.arange(n) < 250),
                                  rng.exponential(600, n))
    training = {"validation_error": 0.3 if task != "regression" else 1.0,
                "cohort_validation_error": {"region=n": 0.2, "region=": 0.5}}
    return {
        f"{task}_drift": _drift(drift.drift(w, cp, th)),
        f"{task}_calibration": _case(calibration.calibration(m, w, th),
                                     calibration.findings),
        f"{task}_cohorts": _case(cohorts.cohorts(m, w, th), cohorts.findings),
        f"{task}_overall_error": _case(cohorts.overall_error(m, w), cohorts.overall_findings),
        f"{task}_gap": _gap(gap.generalization_gap(m, w, th, training)),
        f"{task}_labels": _case(labels.label_stats(few, th), labels.findings),
    }


def new_category_cases() -> dict[str, Case]:
    m, cp, draw, window = compute.countries(7)
    th = compute.TH
    flag_model, flag_cp = compute._binary_model()
    flag_shape = ModelShape.of(flag_model)
    flags = Rows(version_id=np.ones(200, np.int64), ts=np.zeros(200))
    flags.features["flag"] = np.zeros(200)  # an empty 5% bin: decided on the evidence
    flags.score = np.linspace(0.01, 0.99, 200)
    flag_window = MergedWindow(1, T0, T1, outcome_summary(flag_shape, flags,
                                                          count_predictions=True),
                               drift_summaries(flag_shape, flag_cp, flags,
                                               np.zeros(200, np.int64), 1)[0])
    return {"drift_psi_evidence": _drift(drift.drift(flag_window, flag_cp, th)),
            "new_category_same": _drift(drift.drift(window(draw(3000, 0.0)), cp, th)),
            "new_category_new": _drift(drift.drift(window(draw(3000, 0.05)), cp, th)),
            "new_category_small": _drift(drift.drift(window(draw(40, 0.5)), cp, th)),
            "cohorts_no_keys": _case(cohorts.cohorts(m, window(draw(100, 0.0)), th),
                                     cohorts.findings)}


def version_cases() -> dict[str, Case]:
    th = Thresholds()
    overalls = {
        "jump": {"sparsity_change_pp": 30.0, "l1_relative_change": 0.5,
                 "l2_relative_change": -0.9},
        "calm": {"sparsity_change_pp": -0.5, "l1_relative_change": 0.01,
                 "l2_relative_change": 0.02},
        "unknown": {"sparsity_change_pp": None, "l1_relative_change": float("nan")},
        "one_norm": {"sparsity_change_pp": 6.0, "l2_relative_change": 0.2},
    }
    return {f"versions_{k}": _case(versions.version_checks(o, th)) for k, o in overalls.items()}


def cases() -> dict[str, Case]:
    out = binary_cases()
    for seed, task in enumerate(summaries.CLASSES):
        out.update(task_cases(task, seed))
    out.update(new_category_cases())
    out.update(version_cases())
    return out


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, allow_nan=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(cases()))
