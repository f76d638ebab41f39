"""The stored decisions /metrics exports per feature and per cohort, which the alert rules
fire on (deploy/prometheus/rules/modelmon-alerts.yml)."""

from __future__ import annotations

from app.observability.quality import build_families
from app.storage.snapshot import MetricsSnapshot

LIMITS = {"features": 50, "cohorts": 20, "layers": 10}


def row(metric: str, subject: str, value: float, decision: str) -> dict:
    return {"model": "churn", "version": "v2", "metric": metric, "subject": subject,
            "value": value, "decision": decision, "n": 1000, "detail": {}}


def samples(results: list[dict]) -> dict[tuple[str, tuple], float]:
    snap = MetricsSnapshot(results=results)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in build_families(snap, LIMITS, 300.0) for s in fam.samples}


def test_decisions_are_exported_per_feature_and_cohort_with_their_check():
    s = samples([
        row("feature_psi", "age", 0.3, "critical"),
        row("feature_ks_statistic", "age", 0.2, "critical"),
        row("feature_missing_ratio", "age", 0.0, "ok"),
        row("feature_psi", "income", 0.02, "warning"),
        row("feature_missing_ratio", "income", 1.0, "critical"),
        row("feature_psi", "tenure", 4.0, "insufficient_data"),
        row("cohort_error_ratio", "region=north", 0.35, "critical"),
        row("cohort_error_ratio", "region=south", 0.2, "insufficient_data"),
    ])
    mv = (("model", "churn"), ("version", "v2"))

    def feature(name: str, check: str) -> float:
        return s[("modelmon_feature_check_state",
                  tuple(sorted((*mv, ("feature", name), ("check", check)))))]

    assert feature("age", "feature_drift") == 2 and feature("age", "data_quality") == 0
    assert feature("income", "feature_drift") == 1 and feature("income", "data_quality") == 2
    assert feature("tenure", "feature_drift") == 0  # insufficient data never alerts
    # one drift decision per feature (KS shares PSI's row's decision)
    assert len([k for k in s if k[0] == "modelmon_feature_check_state"]) == 5

    def cohort(name: str) -> float:
        return s[("modelmon_cohort_check_state",
                  tuple(sorted((*mv, ("cohort_key", "region"), ("cohort", name)))))]

    assert cohort("north") == 2 and cohort("south") == 0
    assert s[("modelmon_check_state", tuple(sorted((*mv, ("check", "data_quality")))))] == 2
    assert s[("modelmon_check_state", tuple(sorted((*mv, ("check", "feature_drift")))))] == 2


def test_values_the_reference_never_had_are_their_own_checks_per_feature():
    s = samples([
        row("feature_psi", "age", 0.01, "ok"),
        row("feature_missing_ratio", "age", 0.0, "ok"),
        row("feature_out_of_range_ratio", "age", 0.12, "warning"),
        row("feature_psi", "country", 0.01, "ok"),
        row("feature_missing_ratio", "country", 0.0, "ok"),
        row("feature_new_category_ratio", "country", 0.004, "ok"),
    ])
    mv = (("model", "churn"), ("version", "v2"))

    def get(name: str, **labels: str) -> float | None:
        return s.get((name, tuple(sorted((*mv, *labels.items())))))

    assert get("modelmon_feature_check_state", feature="age", check="out_of_range") == 1
    assert get("modelmon_feature_check_state", feature="age", check="data_quality") == 0
    assert get("modelmon_feature_check_state", feature="country", check="new_category") == 0
    assert get("modelmon_feature_check_state", feature="country", check="out_of_range") is None
    assert get("modelmon_feature_out_of_range_ratio", feature="age") == 0.12
    assert get("modelmon_feature_new_category_ratio", feature="country") == 0.004
    assert get("modelmon_check_state", check="out_of_range") == 1
    assert get("modelmon_check_state", check="new_category") == 0
