"""The pictures are the reports' numbers scaled to pixels, with every text escaped."""

from __future__ import annotations

import re

import pytest

from app.monitoring.cohort import wilson_interval
from app.pages import svg
from app.pages.views import cohort_tables, feature_rows, reliability_points


def bars(markup: str) -> list[float]:
    return [float(h) for h in re.findall(r'height="([0-9.]+)" fill', markup)]


def test_histogram_bars_are_each_bins_share_on_one_scale():
    pic = str(svg.histogram(["a", "b"], [30, 10], [10, 30], height=40))
    # shares: reference 0.75 / 0.25, current 0.25 / 0.75; the top share fills the height
    assert bars(pic) == pytest.approx([39.0, 13.0, 13.0, 39.0], abs=0.06)
    assert "a: reference 75.0%, current 25.0%" in pic


def test_histogram_escapes_bin_names():
    pic = str(svg.histogram(["<script>x</script>&"], [1], [1]))
    assert "<script>" not in pic and "&lt;script&gt;" in pic and "&amp;" in pic


def test_an_empty_window_draws_empty_bars_and_no_bins_draws_nothing():
    assert bars(str(svg.histogram(["a", "b"], [5, 5], [0, 0], height=40))) == [39.0, 0.0,
                                                                              39.0, 0.0]
    assert str(svg.histogram([], [], [])) == ""


def test_reliability_points_carry_the_wilson_interval_of_each_bin():
    bins = [{"count": 40, "mean_confidence": 0.2, "observed_rate": 0.25},
            {"count": 0, "mean_confidence": None, "observed_rate": None}]
    (p,) = reliability_points(bins)
    assert (p.low, p.high) == wilson_interval(10, 40)
    assert p.x == 0.2 and p.y == 0.25 and p.count == 40


def test_features_sort_worst_decision_first_then_larger_psi():
    def f(name, decision, psi):
        return {"feature": name, "decision": decision, "psi": psi, "bins": [],
                "reference_counts": [], "current_counts": []}

    rows = feature_rows({"features": [f("a", "ok", 0.5), f("b", "warning", 0.1),
                                      f("c", "critical", 0.2), f("d", "warning", 0.3),
                                      f("e", "insufficient_data", None)]})
    assert [r["feature"] for r in rows] == ["c", "d", "b", "e", "a"]


def test_cohorts_under_the_minimum_are_greyed_and_sorted_after_decided_ones():
    entry = {"cohort_keys": {"region": {"task": "binary", "min_n": 30, "overall": None,
                                        "cohorts": [
        {"cohort": "small", "n": 3, "error_rate": 0.9, "decision": "insufficient_data",
         "gate": "min_n"},
        {"cohort": "bad", "n": 300, "error_rate": 0.4, "ci_low": 0.35, "ci_high": 0.45,
         "rest_error_rate": 0.1, "decision": "critical", "gate": "interval"}]}}}
    (table,) = cohort_tables(entry)
    assert [c["cohort"] for c in table["cohorts"]] == ["bad", "small"]
    assert [c["greyed"] for c in table["cohorts"]] == [False, True]
