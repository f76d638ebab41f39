"""Per subject, the shortest horizon that decides it: one rule for every check, on their
typed, frozen reports, without a database (the end-to-end behaviour through the jobs is in
tests/evaluation/test_evaluation_windows.py)."""

from __future__ import annotations

import dataclasses

import pytest

from app.evaluation import horizon
from app.evaluation.checks.calibration import CalibrationReport
from app.evaluation.checks.cohorts import CohortKeyReport, CohortResult, CohortsReport
from app.evaluation.checks.drift import DriftReport, FeatureDrift, PredictionDrift, PsiGate
from app.evaluation.checks.gap import GapReport, GapResult
from app.monitoring.cohort import CohortStat


def _col(name: str, gate: str, decision: str, kind: type = FeatureDrift):
    return kind(name, "numeric", 0.2, "moderate", 0.0, 0.0, 1000, 50, ("a",), (1000,), (50,),
                "ok", "", PsiGate(400, 5), {}, 0.01, gate=gate, decision=decision)


def test_a_subject_moves_only_when_the_long_horizon_decides_it():
    short = DriftReport(50, (_col("a", "min_support", "insufficient_data"),
                             _col("b", "threshold", "ok"),
                             _col("c", "min_support", "insufficient_data")),
                        _col("prediction", "min_support", "insufficient_data", PredictionDrift))
    long = DriftReport(900, (_col("a", "threshold", "critical"), _col("b", "threshold", "ok"),
                             _col("c", "min_support", "insufficient_data")),
                       _col("prediction", "noise_quantile", "ok", PredictionDrift))
    before = dataclasses.replace(short), dataclasses.replace(long)
    assert horizon.DRIFT.too_small(short) and not horizon.DRIFT.too_small(
        dataclasses.replace(short, features=(short.features[1],), prediction=None))
    kept, moved = horizon.DRIFT.split(short, long, 86_400.0)
    # a: decided over 24 h; c: undecided either way, so it stays in the job window; b stays
    assert [f.feature for f in kept.features] == ["b", "c"] and kept.prediction is None
    assert kept.features[0] is short.features[1]  # kept as it was
    assert [(f.feature, f.decision, f.horizon_seconds) for f in moved.features] == [
        ("a", "critical", 86_400.0)]
    assert moved.prediction.horizon_seconds == 86_400.0 and moved.n == 900
    assert moved.to_dict()["features"][0]["horizon_seconds"] == 86_400.0
    assert "horizon_seconds" not in kept.to_dict()["features"][0]
    assert (short, long) == before  # neither report is changed
    assert all(f.horizon_seconds is None for f in (*short.features, *long.features))
    with pytest.raises(dataclasses.FrozenInstanceError):
        short.features[0].gate = "threshold"  # type: ignore[misc]


def _cohort(name: str, gate: str) -> CohortResult:
    return CohortResult(CohortStat(name, False, 10, gate != "min_n"),
                        "insufficient_data" if gate == "min_n" else "ok", gate)


def _cohorts(*cohorts: CohortResult) -> CohortsReport:
    return CohortsReport((CohortKeyReport("region", "ok", "", "binary", 20, 0, 5, 0.5, None,
                                          cohorts, {}),))


def _gap(gate: str, key: str | None = None, cohort: str | None = None) -> GapResult:
    return GapResult(10, 0.1, {"warning": 0.12, "critical": 0.15}, {}, "ok", gate,
                     cohort_key=key, cohort=cohort)


def test_the_same_rule_moves_cohorts_gaps_and_a_calibration():
    short = _cohorts(_cohort("eu", "min_n"), _cohort("us", "fisher_exact"))
    long = _cohorts(_cohort("eu", "fisher_exact"), _cohort("us", "fisher_exact"))
    kept, moved = horizon.COHORTS.split(short, long, 3600.0)
    assert [c.cohort for c in kept.keys[0].cohorts] == ["us"]
    assert moved.keys[0].cohorts == (dataclasses.replace(long.keys[0].cohorts[0],
                                                         horizon_seconds=3600.0),)
    assert moved.to_dict()["region"]["cohorts"][0]["horizon_seconds"] == 3600.0
    gap_short = GapReport(_gap("min_n"), (_gap("min_n", "region", "eu"),))
    gap_long = GapReport(_gap("interval_lower_bound"), (_gap("min_n", "region", "eu"),))
    kept, moved = horizon.GAP.split(gap_short, gap_long, 10.0)
    assert kept == GapReport(None, gap_short.cohorts)
    assert moved == GapReport(dataclasses.replace(gap_long.overall, horizon_seconds=10.0), ())
    assert horizon.GAP.split(None, None, 10.0) == (None, None)
    small = CalibrationReport(None, 10, None, "insufficient_data", gate="min_support")
    decided = CalibrationReport(None, 900, None, "ok", gate="threshold")
    kept, moved = horizon.CALIBRATION.split(small, decided, 5.0)
    assert kept is None and moved == dataclasses.replace(decided, horizon_seconds=5.0)
    kept, moved = horizon.CALIBRATION.split(small, small, 5.0)
    assert kept is small and moved is None
