"""Decisions from merged summaries: each gate applies where it should, and says so."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from app.evaluation.checks.calibration import calibration
from app.evaluation.checks.cohorts import cohorts
from app.evaluation.checks.drift import drift
from app.evaluation.checks.gap import generalization_gap
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile, column_profile
from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    Rows,
    drift_summaries,
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
    (0.10, "warning"),   # lower bound 0.1292 > 0.12, not > 0.15
    (0.07, "critical"),  # lower bound 0.1292 > 0.12 = 0.07 + 0.05
    (0.12, "ok"),        # the point estimate 0.15 is past 0.14, its interval is not
])
def test_gap_is_decided_on_the_wilson_lower_bound(validation, decision):
    # 150 errors in 1000 labeled predictions: 100 of 600 in a, 50 of 400 in b
    w = _sums_window({"a": (600, 100.0, 0.0), "b": (400, 50.0, 0.0)})
    r = generalization_gap(MODEL, w, TH, {"validation_error": validation})
    g = r.overall
    low, high = _wilson_by_hand(150, 1000)
    assert (g.ci_low, g.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert g.ci_low == pytest.approx(0.12921007251308828, rel=1e-12)  # scipy binomtest
    assert g.production_error == 0.15 and g.n == 1000
    assert g.gap == pytest.approx(0.15 - validation)
    assert g.lines == pytest.approx({"warning": validation + 0.02,
                                     "critical": validation + 0.05})
    assert g.decision == decision and r.cohorts == ()


def test_gap_per_cohort_bands_from_the_thresholds_and_insufficient_data():
    w = _sums_window({"a": (400, 40.0, 0.0), "b": (90, 30.0, 0.0), None: (500, 50.0, 0.0)})
    th = Thresholds(gap_warning=0.0, gap_critical=0.01)
    r = generalization_gap(MODEL, w, th, {
        "cohort_validation_error": {"seg=a": 0.07, "seg=b": 0.05, "seg=c": 0.1, "seg=": 0.2}})
    assert r.overall is None
    by = {c.cohort: c.to_dict() for c in r.cohorts}
    low, _ = _wilson_by_hand(40, 400)
    assert by["a"]["ci_low"] == pytest.approx(low, rel=1e-12)  # 0.0743
    assert by["a"]["decision"] == "warning"   # 0.0743 > 0.07, not > 0.08
    # below the minimum n: reported (a third wrong, far above 0.05), never decided
    assert by["b"]["decision"] == "insufficient_data" and by["b"]["n"] == 90
    assert by["b"]["gap"] == pytest.approx(30 / 90 - 0.05) and by["b"]["gate"] == "min_n"
    assert by["c"]["decision"] == "insufficient_data" and by["c"]["n"] == 0  # no traffic
    assert by["c"]["gap"] is None and by["c"]["ci_low"] is None
    assert by[""]["decision"] == "ok" and by[""]["n"] == 500  # the missing-value cohort
    # a version without a registered validation error
    assert generalization_gap(MODEL, w, th, {}) is None
    # a model without cohort keys: the overall gap from the window's overall error sums
    from dataclasses import replace

    g = generalization_gap(replace(MODEL, cohort_keys=[]), w, th,
                                   {"validation_error": 0.1})
    assert g.cohorts == () and g.overall.n == 990
    assert g.overall.production_error == pytest.approx(120 / 990)
    assert g.overall.ci_low == pytest.approx(_wilson_by_hand(120, 990)[0], rel=1e-12)


def test_gap_of_a_regression_is_decided_on_the_mae_normal_interval():
    model = ModelRow(id=2, name="r", task="regression",
                     features=[{"name": "x0", "type": "numeric"}], cohort_keys=["seg"],
                     classes=None, created_at=datetime(2026, 1, 1, tzinfo=UTC))
    abs_err = np.r_[np.full(200, 0.3), np.full(200, 0.7)]
    w = _sums_window({"a": (400, float(abs_err.sum()), float((abs_err ** 2).sum()))})
    g = generalization_gap(model, w, TH, {"validation_error": 0.44}).overall
    half = 1.959963984540054 * abs_err.std(ddof=1) / np.sqrt(400)
    assert g.production_error == pytest.approx(0.5)
    assert (g.ci_low, g.ci_high) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-9)
    assert g.decision == "warning"  # 0.4804 > 0.46, not > 0.49
    assert "normal" in g.method
    assert generalization_gap(model, w, TH, {"validation_error": 0.42}).overall.decision \
        == "critical"


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
