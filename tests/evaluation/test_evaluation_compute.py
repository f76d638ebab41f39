"""Decisions from merged summaries: each gate applies where it should, and says so."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from app.evaluation.checks.calibration import calibration, findings
from app.evaluation.checks.cohorts import cohorts
from app.evaluation.checks.drift import drift
from app.evaluation.checks.gap import generalization_gap
from app.evaluation.counting import drift_summaries
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile, column_profile
from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    Rows,
    outcome_summary,
    prediction_values,
)
from app.evaluation.windows import MergedWindow
from app.monitoring.gates import psi_min_support
from app.storage.registry import ModelRow

MODEL = ModelRow(id=1, name="m", task="binary_classification",
                 features=[{"name": f"x{i}", "type": "numeric"} for i in range(4)],
                 cohort_keys=["seg"], classes=["0", "1"],
                 created_at=datetime(2026, 1, 1, tzinfo=UTC))
SHAPE = ModelShape.of(MODEL)
TH = Thresholds()


def rows(rng: np.random.Generator, n: int, *, shift: float = 0.0, missing: bool = False,
         sharpen: bool = False, seg_error: float | None = None) -> Rows:
    r = Rows(version_id=np.ones(n, np.int64), ts=np.zeros(n))
    for i in range(4):
        r.features[f"x{i}"] = rng.normal(size=n)
    r.features["x0"] = r.features["x0"] + shift
    if missing:
        r.features["x1"] = np.full(n, np.nan)
    p = expit(2.2 * rng.normal(size=n) - 0.5)
    r.score = expit(2 * np.log(p / (1 - p))) if sharpen else p
    r.label = (rng.uniform(size=n) < p).astype(float)
    seg = np.where(rng.uniform(size=n) < 0.3, "a", "b").astype(object)
    r.cohorts["seg"] = seg
    if seg_error is not None:  # flip labels in cohort a: error 0.2 -> seg_error
        flip = (seg == "a") & (rng.uniform(size=n) < (seg_error - 0.2) / 0.6)
        r.label = np.where(flip, 1 - r.label, r.label)
    r.label_delay = np.zeros(n)
    return r


@pytest.fixture(scope="module")
def profile() -> CompiledProfile:
    ref = rows(np.random.default_rng(0), 10_000)
    return CompiledProfile.compile(
        build_profile(MODEL, ref.features, prediction_values(SHAPE, ref), ref.n), "k")


def window(cp: CompiledProfile, r: Rows) -> MergedWindow:
    return MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC),
                        outcome_summary(SHAPE, r, count_predictions=True),
                        drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0])


def test_below_the_minimum_support_drift_is_insufficient_and_says_why(profile):
    need = psi_min_support(TH.psi_moderate, 10_000, 10, TH.alpha_warning, 5)
    assert 300 < need < 500
    small = drift(window(profile, rows(np.random.default_rng(1), need - 1, shift=3.0)),
                          profile, TH)
    x0 = small.features[0]
    assert x0.psi > 1 and x0.decision == "insufficient_data"
    assert x0.gate == "min_support" and str(need) in x0.decision_reason
    big = drift(window(profile, rows(np.random.default_rng(1), need, shift=3.0)),
                        profile, TH)
    assert big.features[0].decision == "critical"


def test_psi_lines_are_the_noise_quantile_at_low_n_and_the_thresholds_at_high_n(profile):
    lo = drift(window(profile, rows(np.random.default_rng(2), 1000)), profile, TH)
    hi = drift(window(profile, rows(np.random.default_rng(2), 50_000)), profile, TH)
    lines_lo = lo.features[1].psi_gate.lines
    lines_hi = hi.features[1].psi_gate.lines
    assert lines_lo.warning_gate == "noise_quantile" and lines_lo.warning > 0.03
    assert lines_hi.warning_gate == "threshold" and lines_hi.warning == TH.psi_warning
    assert lines_hi.critical == TH.psi_critical
    assert {f.decision for f in lo.features + hi.features} == {"ok"}


def test_a_half_sd_shift_pages_and_a_quarter_sd_shift_tickets_at_ten_thousand(profile):
    half = drift(window(profile, rows(np.random.default_rng(3), 10_000, shift=0.5)),
                         profile, TH).features[0]
    quarter = drift(window(profile, rows(np.random.default_rng(3), 10_000, shift=0.25)),
                            profile, TH).features[0]
    assert half.decision == "critical" and half.gate == "threshold"
    assert quarter.decision == "warning"


def test_an_all_missing_column_is_a_data_quality_decision_not_drift(profile):
    report = drift(window(profile, rows(np.random.default_rng(4), 1000, missing=True)),
                           profile, TH)
    x1 = report.features[1]
    assert x1.psi > 10  # the missing bin against a reference without missing values
    assert x1.decision == "insufficient_data" and x1.gate == "all_missing"
    assert x1.quality[0].decision == "critical" and x1.to_dict()["missing_decision"] == "critical"
    assert report.features[0].quality[0].decision == "ok"


def test_calibration_gate(profile):
    small = calibration(MODEL, window(profile, rows(np.random.default_rng(5), 200)), TH)
    assert small.result.ece > 0 and small.decision == "insufficient_data"
    assert small.gate == "min_support" and small.min_support > 200
    calibrated = calibration(
        MODEL, window(profile, rows(np.random.default_rng(5), 5000)), TH)
    assert calibrated.decision == "ok"
    assert calibrated.noise_quantile["warning"] < TH.ece_warning
    sharp = calibration(
        MODEL, window(profile, rows(np.random.default_rng(5), 5000, sharpen=True)), TH)
    assert sharp.decision in ("warning", "critical") and sharp.gate == "threshold"


def _rare_window(n: int, seed: int, scores_x: float = 1.0, rate_x: float = 1.0
                 ) -> MergedWindow:
    """A binary model with a 2% base rate: labels drawn from the calibrated score times
    ``rate_x``, the score reported times ``scores_x``."""
    from app.evaluation.summaries import OutcomeSummary
    from app.monitoring import CalibrationSums

    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 24.5, size=n)  # mean 0.02
    y = (rng.uniform(size=n) < p * rate_x).astype(float)
    score = np.clip(p * scores_x, 0.0, 1.0)
    sums = CalibrationSums.of(score, y, (score - y) ** 2, y, 2)
    return MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC),
                        OutcomeSummary(n=n, labeled=n, calibration=sums))


def test_observed_against_expected_sees_a_rare_event_model_ece_does_not():
    doubled = calibration(MODEL, _rare_window(10_000, 1, scores_x=2.0), TH)
    assert doubled.result.ece < TH.ece_warning and doubled.decision == "ok"  # ECE blind
    oe = doubled.observed_expected
    assert oe.stat.ratio == pytest.approx(0.5, abs=0.08)
    assert oe.decision == "critical" and oe.stat.pvalue < 1e-12
    halved = calibration(MODEL, _rare_window(10_000, 2, rate_x=0.5), TH).observed_expected
    assert halved.decision == "critical" and halved.stat.ratio < 0.67
    calibrated = calibration(MODEL, _rare_window(10_000, 3), TH).observed_expected
    assert calibrated.decision == "ok" and calibrated.stat.pvalue > 1e-3
    # the effect alone is not evidence: 2 positives where 4 are expected at 200 rows
    small = calibration(MODEL, _rare_window(200, 4, scores_x=2.0), TH).observed_expected
    assert small.decision == "ok" and small.stat.pvalue > 1e-3
    # the stored finding beside ECE
    rows = {f.metric: f for f in findings(doubled)}
    assert rows["calibration_oe_ratio"].value == oe.stat.ratio
    assert rows["calibration_oe_ratio"].decision == "critical"
    assert rows["calibration_ece"].decision == "ok"


def test_observed_against_expected_lines_are_knobs():
    w = _rare_window(10_000, 1, scores_x=1.5)  # O / E 0.74 here: ln -0.30, p 1e-6
    assert calibration(MODEL, w, TH).observed_expected.decision == "warning"
    assert calibration(MODEL, w, replace(TH, oe_log_warning=0.35)
                       ).observed_expected.decision == "ok"
    assert calibration(MODEL, w, replace(TH, oe_log_critical=0.25)
                       ).observed_expected.decision == "critical"


def test_observed_against_expected_per_cohort_names_the_miscalibrated_one():
    """Three cohorts of a 2% model, one (c) with its scores doubled: c is flagged, the
    others and the overall stay quiet, and the alpha is corrected across the four."""
    from app.evaluation.summaries import ModelShape, Rows

    rng = np.random.default_rng(7)
    n = 30_000
    p = rng.beta(0.5, 24.5, size=n)
    seg = np.array(["a", "b", "c"], dtype=object)[rng.choice(3, size=n, p=[0.45, 0.45, 0.1])]
    rows = Rows(version_id=np.ones(n, np.int64), ts=np.zeros(n))
    rows.cohorts["seg"] = seg
    rows.score = np.where(seg == "c", 2 * p, p)
    rows.label = (rng.uniform(size=n) < p).astype(float)
    o = outcome_summary(ModelShape.of(MODEL), rows, count_predictions=True)
    w = MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC),
                     o)
    r = calibration(MODEL, w, TH)
    by = {c.subject: c for c in r.cohorts_observed_expected}
    assert set(by) == {"seg=a", "seg=b", "seg=c"}
    assert by["seg=c"].decision == "critical" and by["seg=c"].stat.ratio < 0.67
    assert by["seg=a"].decision == by["seg=b"].decision == "ok"
    assert r.observed_expected.subjects == by["seg=a"].subjects == 4
    # each cohort's test is the binomial at its mean score, the counts by hand
    inside = seg == "c"
    assert by["seg=c"].stat.expected == pytest.approx(rows.score[inside].sum(), rel=1e-12)
    assert by["seg=c"].stat.observed == rows.label[inside].sum()
    assert by["seg=c"].stat.p_lower == pytest.approx(stats.binom.cdf(
        by["seg=c"].stat.observed, inside.sum(), rows.score[inside].mean()), rel=0.03)
    stored = {(f.metric, f.subject): f for f in findings(r)}
    assert stored[("cohort_calibration_oe_ratio", "seg=c")].decision == "critical"
    # a cohort below cohort_min_n is not decided, and not counted among the subjects
    small = calibration(MODEL, w, replace(TH, cohort_min_n=5000))
    assert {c.subject: c.decision for c in small.cohorts_observed_expected} == {
        "seg=a": "ok", "seg=b": "ok", "seg=c": "insufficient_data"}
    assert small.observed_expected.subjects == 3


def test_a_cohort_is_tested_against_the_rest(profile):
    steady = cohorts(MODEL, window(profile, rows(np.random.default_rng(6), 5000)), TH)
    assert {c.decision for c in steady.keys[0].cohorts} == {"ok"}
    worse = cohorts(
        MODEL, window(profile, rows(np.random.default_rng(6), 5000, seg_error=0.35)), TH)
    a = next(c for c in worse.keys[0].cohorts if c.cohort == "a")
    assert a.gate == "fisher_exact" and a.cohorts_tested == 2
    assert a.rest == pytest.approx(0.2, abs=0.03)
    assert a.to_dict()["rest_error_rate"] == a.rest
    assert a.pvalue_adjusted == pytest.approx(2 * a.pvalue)
    assert a.decision == "critical"  # p < 1e-4 and 0.35 >= 1.5 x 0.2
    few = cohorts(MODEL, window(profile, rows(np.random.default_rng(6), 120)), TH)
    assert {c.decision for c in few.keys[0].cohorts} == {"insufficient_data"}


def test_a_regression_cohort_is_tested_on_its_absolute_errors():
    model = ModelRow(id=2, name="r", task="regression",
                     features=[{"name": "x0", "type": "numeric"}], cohort_keys=["seg"],
                     classes=None, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    shape = ModelShape.of(model)

    def window_of(n: int, scale_a: float, seed: int) -> MergedWindow:
        rng = np.random.default_rng(seed)
        r = Rows(version_id=np.ones(n, np.int64), ts=np.zeros(n))
        r.features["x0"] = rng.normal(size=n)
        seg = np.where(rng.uniform(size=n) < 0.3, "a", "b").astype(object)
        r.cohorts["seg"] = seg
        r.label = rng.normal(size=n)
        r.value = r.label + rng.normal(size=n) * np.where(seg == "a", scale_a, 1.0)
        r.label_delay = np.zeros(n)
        return MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC),
                            datetime(2026, 1, 1, 1, tzinfo=UTC),
                            outcome_summary(shape, r, count_predictions=True))

    steady = cohorts(model, window_of(5000, 1.0, 7), TH).keys[0].cohorts
    assert {c.decision for c in steady} == {"ok"}
    worse = cohorts(model, window_of(5000, 2.0, 7), TH).keys[0].cohorts
    a = next(c for c in worse if c.cohort == "a")
    assert a.gate == "welch_test" and a.decision == "critical"
    assert a.stat.mae >= TH.cohort_ratio_critical * a.rest
    assert a.to_dict()["rest_mae"] == a.rest and "rest_error_rate" not in a.to_dict()
    b = next(c for c in worse if c.cohort == "b")
    assert b.decision == "ok" and b.pvalue > 0.5  # one-sided: better than the rest


def test_values_outside_the_reference_range_are_a_data_quality_warning(profile):
    rng = np.random.default_rng(6)
    r = rows(rng, 2000)
    r.features["x2"] = np.where(rng.uniform(size=r.n) < 0.1, 50.0, r.features["x2"])
    report = drift(window(profile, r), profile, TH).to_dict()
    x0, _, x2 = report["features"][:3]
    assert x2["out_of_range_rate"] == pytest.approx(
        float(np.mean((r.features["x2"] < profile.columns[2].ks.points[0])
                      | (r.features["x2"] > profile.columns[2].ks.points[-1]))), abs=0)
    assert 0.08 < x2["out_of_range_rate"] < 0.12
    assert x2["out_of_range_decision"] == "warning"
    # a stationary column: its share is the chance of a draw beyond 10,000 reference draws
    assert x0["out_of_range_rate"] < 0.005 and x0["out_of_range_decision"] == "ok"
    assert x0["out_of_range_null"] == pytest.approx(
        stats.beta.ppf(1 - TH.alpha_warning / 5, 2, 9999), rel=1e-12)
    assert "new_category_rate" not in x0
    # the same shift in a window below the minimum n is not decided
    small = rows(rng, TH.min_n - 1)
    small.features["x2"] = small.features["x2"] + 100.0
    s = drift(window(profile, small), profile, TH).to_dict()["features"][2]
    assert s["out_of_range_rate"] == 1.0 and s["out_of_range_decision"] == "insufficient_data"


def countries(seed: int):
    """A model of one categorical feature whose reference saw three countries: its compiled
    profile, draws of n rows with a share of a new one, and their merged window."""
    model = ModelRow(id=2, name="c", task="binary_classification",
                     features=[{"name": "country", "type": "categorical"}], cohort_keys=[],
                     classes=["0", "1"], created_at=datetime(2026, 1, 1, tzinfo=UTC))
    shape = ModelShape.of(model)
    rng = np.random.default_rng(seed)
    known = np.array(["DE", "FR", "US"], dtype=object)

    def draw(n: int, new_share: float) -> Rows:
        r = Rows(version_id=np.ones(n, np.int64), ts=np.zeros(n))
        c = known[rng.integers(0, 3, size=n)]
        r.features["country"] = np.where(rng.uniform(size=n) < new_share, "BR", c)
        r.score = rng.uniform(size=n)
        return r

    ref = draw(5000, 0.0)
    cp = CompiledProfile.compile(build_profile(model, ref.features,
                                               prediction_values(shape, ref), ref.n), "c")

    def window_of(r: Rows) -> MergedWindow:
        return MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC),
                            datetime(2026, 1, 1, 1, tzinfo=UTC),
                            outcome_summary(shape, r, count_predictions=True),
                            drift_summaries(shape, cp, r, np.zeros(r.n, np.int64), 1)[0])

    return model, cp, draw, window_of


def test_new_categories_are_a_data_quality_warning():
    _, cp, draw, window_of = countries(7)

    def decide(r: Rows) -> dict:
        return drift(window_of(r), cp, TH).features[0].to_dict()

    same, new = decide(draw(3000, 0.0)), decide(draw(3000, 0.05))
    assert same["new_category_rate"] == 0.0 and same["new_category_decision"] == "ok"
    assert same["reference_new_category_rate"] == 0.0
    assert 0.04 < new["new_category_rate"] < 0.06 and new["new_category_decision"] == "warning"
    assert "out_of_range_rate" not in new
    # one new category in a hundred is below the rise: no ticket for a trickle
    assert decide(draw(3000, 0.01))["new_category_decision"] == "ok"


def test_the_ks_sample_keeps_the_reference_extremes_when_it_thins_it():
    rng = np.random.default_rng(8)
    x = rng.standard_t(3, size=30_000)
    sample = column_profile("numeric", x, n_bins=10, sample_size=10_000,
                            max_categories=50)["sample"]
    assert len(sample) == 10_000
    assert sample[0] == x.min() and sample[-1] == x.max()


# --- generalization gap: production error against the registered validation error -------

def _sums_window(cohorts: dict[str | None, tuple[int, float, float]]) -> MergedWindow:
    """A window whose seg cohorts hold (labeled, errors or sum |e|, sum e^2)."""
    from app.evaluation.summaries import OutcomeSummary
    from app.monitoring import CohortSums

    names = tuple(cohorts)
    n, first, second = (np.array([cohorts[c][i] for c in names]) for i in range(3))
    total = int(n.sum())
    return MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC),
                        OutcomeSummary(n=total, labeled=total,
                                       cohorts={"seg": CohortSums(names, n.astype(np.int64),
                                                                  first, second)},
                                       errors=float(first.sum()), squares=float(second.sum())))


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("validation, decision", [
    (0.09, "warning"),   # P(X >= 150 | 1000, 0.11) = 6.6e-5 < 1e-3; at 0.14: 0.19
    (0.05, "critical"),  # P(X >= 150 | 1000, 0.10) = 4.5e-7 < 1e-4
    (0.10, "ok"),        # the point estimate 0.15 is past 0.12; P(X >= 150 | 0.12) = 0.0026
])
def test_gap_is_an_exact_binomial_test_against_validation_and_band(validation, decision):
    # 150 errors in 1000 labeled predictions: 100 of 600 in a, 50 of 400 in b
    w = _sums_window({"a": (600, 100.0, 0.0), "b": (400, 50.0, 0.0)})
    r = generalization_gap(MODEL, w, TH, {"validation_error": validation})
    g = r.overall
    low, high = _wilson_by_hand(150, 1000)
    assert (g.ci_low, g.ci_high) == pytest.approx((low, high), rel=1e-12)  # reported
    assert g.production_error == 0.15 and g.n == 1000
    assert g.gap == pytest.approx(0.15 - validation)
    assert g.lines == pytest.approx({"warning": validation + 0.02,
                                     "critical": validation + 0.05})
    assert g.pvalue == pytest.approx({
        "warning": stats.binom.sf(149, 1000, validation + 0.02),
        "critical": stats.binom.sf(149, 1000, validation + 0.05)}, rel=1e-9)
    assert g.gate == "binomial_exact" and g.subjects == 1
    assert g.decision == decision and r.cohorts == ()


@pytest.mark.parametrize("validation, decision", [
    (0.09, "ok"),       # against 220 of 2000: p = 0.0012, the validation's own noise
    (0.06, "warning"),  # against 160 of 2000: 4.8e-9; against 220 of 2000: 0.0012
])
def test_gap_is_fishers_exact_test_against_the_validation_counts(validation, decision):
    w = _sums_window({"a": (600, 100.0, 0.0), "b": (400, 50.0, 0.0)})
    g = generalization_gap(MODEL, w, TH, {"validation_error": validation,
                                          "validation_rows": 2000}).overall
    k_warn, k_crit = round((validation + 0.02) * 2000), round((validation + 0.05) * 2000)
    assert g.pvalue["warning"] == pytest.approx(stats.fisher_exact(
        [[150, 850], [k_warn, 2000 - k_warn]], alternative="greater").pvalue, rel=1e-12)
    assert g.pvalue["critical"] == pytest.approx(stats.fisher_exact(
        [[150, 850], [k_crit, 2000 - k_crit]], alternative="greater").pvalue, rel=1e-12)
    assert g.gate == "fisher_exact" and g.validation_rows == 2000
    assert g.decision == decision


def test_gap_per_cohort_bands_from_the_thresholds_and_insufficient_data():
    w = _sums_window({"a": (400, 40.0, 0.0), "b": (90, 30.0, 0.0), None: (500, 50.0, 0.0)})
    th = Thresholds(gap_warning=0.0, gap_critical=0.01)
    r = generalization_gap(MODEL, w, th, {
        "cohort_validation_error": {"seg=a": 0.05, "seg=b": 0.05, "seg=c": 0.1, "seg=": 0.2}})
    assert r.overall is None
    by = {c.cohort: c.to_dict() for c in r.cohorts}
    low, _ = _wilson_by_hand(40, 400)
    assert by["a"]["ci_low"] == pytest.approx(low, rel=1e-12)
    # two cohorts reach gap_min_n (a and the missing value): alpha / 2
    assert by["a"]["subjects"] == 2
    assert by["a"]["pvalue"]["warning"] == pytest.approx(stats.binom.sf(39, 400, 0.05))  # 3e-5
    assert by["a"]["pvalue"]["critical"] == pytest.approx(stats.binom.sf(39, 400, 0.06))
    assert by["a"]["decision"] == "warning"   # 0.0012 is not below 1e-4 / 2
    # below the minimum n: reported (a third wrong, far above 0.05), never decided
    assert by["b"]["decision"] == "insufficient_data" and by["b"]["n"] == 90
    assert by["b"]["gap"] == pytest.approx(30 / 90 - 0.05) and by["b"]["gate"] == "min_n"
    assert by["c"]["decision"] == "insufficient_data" and by["c"]["n"] == 0  # no traffic
    assert by["c"]["gap"] is None and by["c"]["ci_low"] is None
    assert by[""]["decision"] == "ok" and by[""]["n"] == 500  # the missing-value cohort
    # the minimum n is a knob: at 95 rows b would be decided, and counted among the subjects
    r = generalization_gap(MODEL, w, replace(th, gap_min_n=80), {
        "cohort_validation_error": {"seg=a": 0.05, "seg=b": 0.05}})
    assert [c.subjects for c in r.cohorts] == [2, 2] and r.cohorts[1].decision == "critical"
    # a version without a registered validation error
    assert generalization_gap(MODEL, w, th, {}) is None
    # a model without cohort keys: the overall gap from the window's overall error sums
    g = generalization_gap(replace(MODEL, cohort_keys=[]), w, th,
                           {"validation_error": 0.1})
    assert g.cohorts == () and g.overall.n == 990
    assert g.overall.production_error == pytest.approx(120 / 990)
    assert g.overall.ci_low == pytest.approx(_wilson_by_hand(120, 990)[0], rel=1e-12)


def test_gap_of_cohorts_at_their_validation_error_stays_quiet():
    """20 cohorts whose production error equals their validation error (measured on 1,000
    rows each): across 200 windows of 300 to 10,000 labeled predictions, the corrected exact
    tests flag (far) fewer than 1% of windows."""
    rng = np.random.default_rng(26)
    rates = rng.uniform(0.05, 0.3, size=20)
    shares = rng.dirichlet(np.full(20, 2.0))
    flagged = 0
    for i in range(200):
        n = (300, 1000, 10_000)[i % 3]
        counts = rng.multinomial(n, shares)
        errors = rng.binomial(counts, rates)
        v_err = rng.binomial(1000, rates) / 1000  # the registered figures, themselves noisy
        w = _sums_window({f"s{j}": (int(counts[j]), float(errors[j]), 0.0)
                          for j in range(20)})
        training = {"cohort_validation_error": {f"seg=s{j}": float(v_err[j])
                                                for j in range(20)},
                    "cohort_validation_rows": {f"seg=s{j}": 1000 for j in range(20)}}
        r = generalization_gap(MODEL, w, TH, training)
        flagged += any(c.decision in ("warning", "critical") for c in r.cohorts)
    assert flagged <= 2


def test_gap_of_a_regression_is_a_t_test_against_validation_and_band():
    model = ModelRow(id=2, name="r", task="regression",
                     features=[{"name": "x0", "type": "numeric"}], cohort_keys=["seg"],
                     classes=None, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    abs_err = np.r_[np.full(200, 0.3), np.full(200, 0.7)]
    w = _sums_window({"a": (400, float(abs_err.sum()), float((abs_err ** 2).sum()))})
    g = generalization_gap(model, w, TH, {"validation_error": 0.44}).overall
    half = 1.959963984540054 * abs_err.std(ddof=1) / np.sqrt(400)
    assert g.production_error == pytest.approx(0.5)
    assert (g.ci_low, g.ci_high) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-9)
    assert g.pvalue["warning"] == pytest.approx(
        stats.ttest_1samp(abs_err, 0.46, alternative="greater").pvalue, rel=1e-9)
    assert g.decision == "warning"  # p 3.9e-5 at 0.46; 0.16 at 0.49
    assert g.gate == "t_test"
    assert generalization_gap(model, w, TH, {"validation_error": 0.40}).overall.decision \
        == "critical"  # p 4.4e-7 at 0.45


def _binary_model() -> tuple[ModelRow, CompiledProfile]:
    model = ModelRow(id=2, name="b", task="binary_classification",
                     features=[{"name": "flag", "type": "numeric"}], cohort_keys=[],
                     classes=["0", "1"], created_at=datetime(2026, 1, 1, tzinfo=UTC))
    shape = ModelShape.of(model)
    ref = Rows(version_id=np.ones(10_000, np.int64), ts=np.zeros(10_000))
    ref.features["flag"] = (np.arange(10_000) < 500).astype(float)  # exactly 5%
    ref.score = np.linspace(0.01, 0.99, 10_000)
    cp = CompiledProfile.compile(
        build_profile(model, ref.features, prediction_values(shape, ref), ref.n), "b")
    return model, cp


@pytest.mark.parametrize("ones,decision,gate", [
    (0, "ok", "psi_evidence"),  # an empty 5% bin: PSI 0.30 through the floor, chi2 p 0.0014
    (30, "warning", "noise_quantile"),  # 5% -> 15%: PSI 0.12, chi2 p 1e-10
    (60, "critical", "threshold"),  # 5% -> 30%
])
def test_psi_needs_the_chi_square_evidence_where_a_bin_is_thin(ones, decision, gate):
    model, cp = _binary_model()
    shape = ModelShape.of(model)
    r = Rows(version_id=np.ones(200, np.int64), ts=np.zeros(200))
    r.features["flag"] = (np.arange(200) < ones).astype(float)
    r.score = np.linspace(0.01, 0.99, 200)
    w = MergedWindow(1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC),
                     outcome_summary(shape, r, count_predictions=True),
                     drift_summaries(shape, cp, r, np.zeros(200, np.int64), 1)[0])
    f = drift(w, cp, TH).features[0]
    table = np.array([f.reference_counts, f.current_counts])
    assert table.sum(axis=1).tolist() == [10_000, 200] and table[:, -1].tolist() == [0, 0]
    expected_p = stats.chi2_contingency(table[:, :-1], correction=False).pvalue  # no missing
    assert f.psi_pvalue == pytest.approx(expected_p, rel=1e-9)
    assert f.decision == decision and f.gate == gate
    if ones == 0:  # PSI alone would have paged
        assert f.psi > f.psi_gate.lines.critical > 0.1
