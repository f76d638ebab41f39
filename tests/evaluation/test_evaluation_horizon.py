"""Per subject, the shortest horizon that decides it: one rule for every check, without a
database (the end-to-end behaviour through the jobs is in tests/evaluation/
test_evaluation_windows.py)."""

from __future__ import annotations

import copy

from app.evaluation import horizon


def _col(name: str, gate: str, decision: str) -> dict:
    return {"feature": name, "gate": gate, "decision": decision}


def test_a_subject_moves_only_when_the_long_horizon_decides_it():
    short = {"n": 50, "features": [_col("a", "min_support", "insufficient_data"),
                                   _col("b", "threshold", "ok"),
                                   _col("c", "min_support", "insufficient_data")],
             "prediction": _col("prediction", "min_support", "insufficient_data")}
    long = {"n": 900, "features": [_col("a", "threshold", "critical"),
                                   _col("b", "threshold", "ok"),
                                   _col("c", "min_support", "insufficient_data")],
            "prediction": _col("prediction", "noise_quantile", "ok")}
    before = copy.deepcopy((short, long))
    assert horizon.DRIFT.too_small(short) and not horizon.DRIFT.too_small(
        {**short, "features": [short["features"][1]], "prediction": None})
    kept, moved = horizon.DRIFT.split(short, long, 86_400.0)
    # a: decided over 24 h; c: undecided either way, so it stays in the job window; b stays
    assert [f["feature"] for f in kept["features"]] == ["b", "c"] and kept["prediction"] is None
    assert [(f["feature"], f["decision"], f["horizon_seconds"]) for f in moved["features"]] == [
        ("a", "critical", 86_400.0)]
    assert moved["prediction"]["horizon_seconds"] == 86_400.0 and moved["n"] == 900
    assert (short, long) == before  # neither report is changed


def test_the_same_rule_moves_cohorts_gaps_and_a_calibration():
    short = {"region": {"task": "binary", "cohorts": [
        {"cohort": "eu", "gate": "min_n"}, {"cohort": "us", "gate": "fisher_exact"}]}}
    long = {"region": {"task": "binary", "cohorts": [
        {"cohort": "eu", "gate": "fisher_exact"}, {"cohort": "us", "gate": "fisher_exact"}]}}
    kept, moved = horizon.COHORTS.split(short, long, 3600.0)
    assert [c["cohort"] for c in kept["region"]["cohorts"]] == ["us"]
    assert moved["region"]["cohorts"] == [{"cohort": "eu", "gate": "fisher_exact",
                                           "horizon_seconds": 3600.0}]
    gap_short = {"overall": {"gate": "min_n"}, "cohorts": [
        {"cohort_key": "region", "cohort": "eu", "gate": "min_n"}]}
    gap_long = {"overall": {"gate": "interval_lower_bound"}, "cohorts": [
        {"cohort_key": "region", "cohort": "eu", "gate": "min_n"}]}
    kept, moved = horizon.GAP.split(gap_short, gap_long, 10.0)
    assert kept == {"overall": None, "cohorts": gap_short["cohorts"]}
    assert moved == {"overall": {"gate": "interval_lower_bound", "horizon_seconds": 10.0},
                     "cohorts": []}
    kept, moved = horizon.CALIBRATION.split({"gate": "min_support"}, {"gate": "threshold"}, 5.0)
    assert kept is None and moved == {"gate": "threshold", "horizon_seconds": 5.0}
    kept, moved = horizon.CALIBRATION.split({"gate": "min_support"}, {"gate": "min_support"},
                                            5.0)
    assert kept == {"gate": "min_support"} and moved is None
