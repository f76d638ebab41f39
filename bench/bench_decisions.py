"""How often the service's decisions fire on windows where nothing changed, and how reliably
they catch the changes that matter, at every traffic level.

    .venv/bin/python bench/bench_decisions.py [--windows 24] [--shift-windows 6]
                                              [--sizes 100,200,1000,10000,100000] [--full]
                                              [--seed 1] [--json] [--jobs 1]
                                              [--only stationary|shifted|rare|gap|cbpe|
                                                      multivariate]

One binary classification model: 50 features of varied shapes (normal, heavy-tailed t3,
uniform, lognormal, bimodal, few-valued, binary 5%, normal with 5% missing, t3 with 5% missing,
categorical with 8 values; 5 of each), a cohort key with 10 values (one at 30%, one at 5% of
traffic), the score as the prediction column; a calibrated score (labels drawn from it) with
an error rate of about 0.20 in every cohort; a 10,000-row reference profile built by
``build_profile``.

Traffic is generated per 5-minute bucket (n/12 rows each, so every 1-hour window has exactly
n rows), folded into bucket summaries by the service's own ``drift_summaries`` and
``outcome_summary``, and windows of 12 buckets at 5-minute steps are merged by addition and
decided by the checks of ``app.evaluation.checks`` (``drift``, ``calibration``,
``cohorts``) with the default settings: the decisions the jobs store and the alert rules page on.

Stationary: ``--windows`` overlapping windows per n (``--full``: 8,640, 30 days), every
decision counted; a window is flagged when any decision is warning or critical, paged when
any is critical. Pages: runs of consecutive critical windows (the alert rules fire on the
stored decisions and hold ``for: 5m``, one window), scaled to 30 days.

Shifted: per case, 12 windows while the change ramps in (window k holds k changed buckets)
then ``--shift-windows`` fully changed windows; the decision on the changed subject (the
feature, the calibration, the cohort) is counted on the fully changed windows, and the ramp
says after how many 5-minute steps it first flagged.

Rare events (``--only rare``, issue 26): a binary model with a 2% base rate, calibrated
("stationary"), its scores doubled ("scores x2") or its true rate halved under unchanged
scores ("true rate halved"); the share of windows the calibration check (the worst of ECE and
observed / expected positives) flags, and ECE alone. Generalization gap (``--only gap``): 20
cohorts of unequal traffic erring at exactly their true validation rate, the registered
validation errors measured on 20,000 (or 2,000) rows, with the rows registered (Fisher's
test) or errors only (binomial); the share of windows with any gap decision. Both run only
when named, on ``--sizes`` (e.g. 300,1000,10000) and ``--windows``. Performance estimated
before labels (``--only cbpe``): bench/cbpe_shift.py, a covariate shift that lowers precision,
the CBPE estimate against the realized value and the window its decision fires in.

Multivariate drift (``--only multivariate``, issue 26): ten numeric features (a block of four
sharing a factor, a pair correlated 0.6, t3, lognormal, uniform, a normal with 5% missing)
and a categorical; ``--shift-windows`` windows per n with every bucket changed: the pair's
correlation flipped to -0.6 or gone (each feature's marginal unchanged), decided by the
multivariate check and, beside it, every univariate drift column; and stationary windows
(``--windows``, ``--full`` 8,640: 30 days) of this world and of the 50-feature world above,
their buckets' error sums added up and decided as the check decides (the 50-feature world's
numeric features drawn alone: the same distribution as ``draw``'s, at a fraction of its cost).

Embedding drift (``--only embedding``, issue 26): bench/embedding_shift.py, a 32-dimensional
embedding whose mean shifts by 0.5 sd along one direction, and stationary windows.

Prints tables (and with --json one RESULTS line); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, logit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cbpe_shift  # noqa: E402  (bench/cbpe_shift.py)
import embedding_shift  # noqa: E402  (bench/embedding_shift.py)

from app.evaluation.checks.calibration import calibration  # noqa: E402
from app.evaluation.checks.cohorts import cohorts  # noqa: E402
from app.evaluation.checks.drift import drift  # noqa: E402
from app.evaluation.checks.gap import generalization_gap  # noqa: E402
from app.evaluation.checks.multivariate import decide, multivariate  # noqa: E402
from app.evaluation.counting import drift_summaries  # noqa: E402
from app.evaluation.policy import Thresholds  # noqa: E402
from app.evaluation.profiles import build_profile  # noqa: E402
from app.evaluation.summaries import (  # noqa: E402
    CompiledProfile,
    DriftSummary,
    ModelShape,
    OutcomeSummary,
    Rows,
    outcome_summary,
    prediction_values,
)
from app.evaluation.windows import MergedWindow  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.storage.registry import ModelRow  # noqa: E402

BUCKETS = 12  # 5-minute buckets in a 1-hour window
N_REFERENCE = 10_000
SEVERITY = {"ok": 0, "insufficient_data": 0, "warning": 1, "critical": 2}
CATEGORIES = np.array([f"c{i}" for i in range(8)], dtype=object)
CATEGORY_P = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.07, 0.04, 0.02])
COHORTS = np.array([f"s{i}" for i in range(10)], dtype=object)
COHORT_P = np.array([0.30, 0.05] + [0.65 / 8] * 8)
FEW_P = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
SCORE_SCALE, SCORE_SHIFT = 2.2, -0.5  # error rate about 0.20 at the 0.5 cut


def _normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=n)


def _heavy(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_t(3, size=n)


def _uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(size=n)


def _lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.lognormal(size=n)


def _bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.uniform(size=n) < 0.5, -2.0, 2.0) + rng.normal(size=n)


def _few(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(5, size=n, p=FEW_P).astype(np.float64)


def _binary(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.uniform(size=n) < 0.05).astype(np.float64)


def _with_missing(gen: Callable[[np.random.Generator, int], np.ndarray]
                  ) -> Callable[[np.random.Generator, int], np.ndarray]:
    def g(rng: np.random.Generator, n: int) -> np.ndarray:
        x = gen(rng, n)
        x[rng.uniform(size=n) < 0.05] = np.nan
        return x
    return g


def _categorical(rng: np.random.Generator, n: int) -> np.ndarray:
    return CATEGORIES[rng.choice(len(CATEGORIES), size=n, p=CATEGORY_P)]


# name -> (generator, population sd used for shifts)
SHAPES: dict[str, tuple[Callable[[np.random.Generator, int], np.ndarray], float]] = {
    "normal": (_normal, 1.0),
    "heavy": (_heavy, math.sqrt(3.0)),
    "uniform": (_uniform, math.sqrt(1 / 12)),
    "lognormal": (_lognormal, math.sqrt((math.e - 1) * math.e)),
    "bimodal": (_bimodal, math.sqrt(5.0)),
    "few": (_few, 1.0),
    "binary": (_binary, 0.218),
    "missing": (_with_missing(_normal), 1.0),
    "heavymissing": (_with_missing(_heavy), math.sqrt(3.0)),
    "categorical": (_categorical, 0.0),
}
FEATURES = [(f"{shape}{i}", shape) for i in range(5) for shape in SHAPES]


def model_row() -> ModelRow:
    return ModelRow(
        id=1, name="sim", task="binary_classification",
        features=[{"name": name, "type": "categorical" if shape == "categorical" else "numeric"}
                  for name, shape in FEATURES],
        cohort_keys=["segment"], classes=["0", "1"], created_at=datetime(2026, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Change:
    """A change applied to the rows of a bucket (in place)."""

    name: str
    subject: str  # a feature name, "calibration" or "segment=<value>"
    apply: Callable[[np.random.Generator, Rows, np.ndarray], None]


def _shift(feature: str, sds: float) -> Callable[[np.random.Generator, Rows, np.ndarray], None]:
    sd = SHAPES[dict(FEATURES)[feature]][1]

    def f(rng: np.random.Generator, rows: Rows, p: np.ndarray) -> None:
        rows.features[feature] = rows.features[feature] + sds * sd
    return f


def _variance(feature: str, factor: float):
    def f(rng: np.random.Generator, rows: Rows, p: np.ndarray) -> None:
        rows.features[feature] = rows.features[feature] * math.sqrt(factor)
    return f


def _binary_rate(feature: str, rate: float):
    def f(rng: np.random.Generator, rows: Rows, p: np.ndarray) -> None:
        rows.features[feature] = (rng.uniform(size=rows.n) < rate).astype(np.float64)
    return f


def _cohort_error(cohort: str, target: float):
    # Labels flipped with probability f raise an error rate e to e + f (1 - 2e).
    def f(rng: np.random.Generator, rows: Rows, p: np.ndarray) -> None:
        inside = rows.cohorts["segment"] == cohort
        flip = inside & (rng.uniform(size=rows.n) < (target - 0.2) / (1 - 2 * 0.2))
        rows.label = np.where(flip, 1.0 - rows.label, rows.label)
    return f


def _miscalibrate(rng: np.random.Generator, rows: Rows, p: np.ndarray) -> None:
    clipped = np.clip(p, 1e-12, 1 - 1e-12)
    rows.score = expit(2.0 * logit(clipped))


CHANGES = [
    *(Change(f"{shape} +{s} sd", f"{shape}0", _shift(f"{shape}0", s))
      for s in (0.25, 0.5) for shape in ("normal", "heavy", "uniform", "lognormal", "bimodal")),
    Change("normal variance x1.3", "normal1", _variance("normal1", 1.3)),
    Change("heavy variance x1.3", "heavy1", _variance("heavy1", 1.3)),
    Change("binary 5% -> 15%", "binary0", _binary_rate("binary0", 0.15)),
    Change("cohort 0.20 -> 0.35 at 30%", "segment=s0", _cohort_error("s0", 0.35)),
    Change("cohort 0.20 -> 0.35 at 5%", "segment=s1", _cohort_error("s1", 0.35)),
    Change("miscalibration sigmoid(2 logit p)", "calibration", _miscalibrate),
]


def draw(rng: np.random.Generator, n: int, t0: float) -> tuple[Rows, np.ndarray]:
    """n rows at time t0: features, cohort, a calibrated score and its label."""
    rows = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.full(n, t0))
    for name, shape in FEATURES:
        rows.features[name] = SHAPES[shape][0](rng, n)
    rows.cohorts["segment"] = COHORTS[rng.choice(len(COHORTS), size=n, p=COHORT_P)]
    p = expit(SCORE_SCALE * rng.normal(size=n) + SCORE_SHIFT)
    rows.score = p.copy()
    rows.label = (rng.uniform(size=n) < p).astype(np.float64)
    rows.label_delay = np.full(n, 60.0)
    return rows, p


class Sim:
    def __init__(self, seed: int) -> None:
        self.model = model_row()
        self.shape = ModelShape.of(self.model)
        rng = np.random.default_rng(seed)
        ref, _ = draw(rng, N_REFERENCE, 0.0)
        profile = build_profile(self.model, ref.features, prediction_values(self.shape, ref),
                                ref.n)
        self.cp = CompiledProfile.compile(profile, "sim")
        self.th = Thresholds.from_settings(Settings())

    def bucket(self, rng: np.random.Generator, n: int, change: Change | None
               ) -> tuple[DriftSummary, OutcomeSummary]:
        rows, p = draw(rng, n, 0.0)
        if change is not None:
            change.apply(rng, rows, p)
        zero = np.zeros(n, dtype=np.int64)
        return (drift_summaries(self.shape, self.cp, rows, zero, 1)[0],
                outcome_summary(self.shape, rows, count_predictions=True))

    def decide(self, parts: list[tuple[DriftSummary, OutcomeSummary]], labels_only: bool
               ) -> dict[str, str]:
        """Every decision of one window, by subject."""
        d = DriftSummary(self.cp.key, 0, np.zeros(self.cp.size, dtype=np.int64))
        o = OutcomeSummary()
        for ds, os_ in parts:
            d.add(ds)
            o.add(os_)
        w = MergedWindow(version_id=1, start=datetime(2026, 1, 1, tzinfo=UTC),
                         end=datetime(2026, 1, 1, 1, tzinfo=UTC), outcome=o, drift=d,
                         buckets=len(parts))
        out: dict[str, str] = {}
        if not labels_only:
            r = drift(w, self.cp, self.th)
            for f in r.features:
                out[f.feature] = f.decision
                # data quality (tickets): missing values, values outside the reference's range,
                # categories it never had
                for q in f.quality:
                    out[f"quality:{f.feature}:{q.key}"] = q.decision
            if r.prediction is not None:
                out["prediction"] = r.prediction.decision
        out["calibration"] = calibration_decision(calibration(self.model, w, self.th))
        for k in cohorts(self.model, w, self.th).keys:
            for row in k.cohorts:
                out[f"{k.key}={row.cohort}"] = row.decision
        return out


def calibration_decision(r: Any) -> str:
    """The calibration check's state: the worst of its ECE and O / E decisions (overall and
    per cohort)."""
    oe = [x for x in (r.observed_expected, *r.cohorts_observed_expected) if x is not None]
    return max([r.decision, *(x.decision for x in oe)], key=lambda d: SEVERITY[d])


def bucket_sizes(n: int, count: int) -> list[int]:
    """Sizes whose every run of 12 consecutive buckets adds up to exactly n."""
    base = [n // BUCKETS + (1 if i < n % BUCKETS else 0) for i in range(BUCKETS)]
    return [base[i % BUCKETS] for i in range(count)]


def stationary(sim: Sim, n: int, windows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, n, 0])
    sizes = bucket_sizes(n, windows + BUCKETS - 1)
    parts = [sim.bucket(rng, s, None) for s in sizes[:BUCKETS - 1]]
    worst: list[int] = []
    by_check = {"drift": 0, "data_quality": 0, "calibration": 0, "cohorts": 0}
    crit_check = dict.fromkeys(by_check, 0)
    insufficient = 0
    flagged_subjects: dict[str, int] = {}
    for i in range(windows):
        parts.append(sim.bucket(rng, sizes[BUCKETS - 1 + i], None))
        decisions = sim.decide(parts[-BUCKETS:], labels_only=False)
        parts = parts[-(BUCKETS - 1):]
        sev = dict.fromkeys(by_check, 0)
        for subject, dec in decisions.items():
            check = ("calibration" if subject == "calibration"
                     else "cohorts" if subject.startswith("segment=")
                     else "data_quality" if subject.startswith("quality:") else "drift")
            sev[check] = max(sev[check], SEVERITY[dec])
            if SEVERITY[dec] >= 1:
                key = f"{subject} {dec}"
                flagged_subjects[key] = flagged_subjects.get(key, 0) + 1
            insufficient += dec == "insufficient_data" and check != "data_quality"
        for check, s in sev.items():
            by_check[check] += s >= 1
            crit_check[check] += s >= 2
        worst.append(max(sev.values()))
    runs, previous = 0, 0
    for s in worst:
        runs += s >= 2 and previous < 2
        previous = s
    w = np.array(worst)
    return {
        "n": n, "windows": windows,
        "flagged": float(np.mean(w >= 1)), "paged": float(np.mean(w >= 2)),
        "pages_per_30d": runs / windows * 8640,
        "flagged_by_check": {k: v / windows for k, v in by_check.items()},
        "paged_by_check": {k: v / windows for k, v in crit_check.items()},
        "insufficient_per_window": insufficient / windows,
        "flagged_subjects": dict(sorted(flagged_subjects.items(), key=lambda kv: -kv[1])),
    }


def shifted(sim: Sim, change: Change, n: int, windows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, n, 1 + CHANGES.index(change)])
    labels_only = not change.subject.startswith(tuple(name for name, _ in FEATURES))
    sizes = bucket_sizes(n, 2 * BUCKETS - 2 + windows)
    parts = [sim.bucket(rng, s, None) for s in sizes[:BUCKETS - 1]]
    first = None
    full: list[str] = []
    for i in range(BUCKETS - 1 + windows):
        parts.append(sim.bucket(rng, sizes[BUCKETS - 1 + i], change))
        dec = sim.decide(parts[-BUCKETS:], labels_only).get(change.subject, "insufficient_data")
        parts = parts[-(BUCKETS - 1):]
        if first is None and SEVERITY[dec] >= 1:
            first = i + 1
        if i + 1 >= BUCKETS:
            full.append(dec)
    f = np.array([SEVERITY[d] for d in full])
    return {"change": change.name, "n": n, "windows": len(full),
            "flagged": float(np.mean(f >= 1)), "paged": float(np.mean(f >= 2)),
            "insufficient": float(np.mean([d == "insufficient_data" for d in full])),
            "first_flag_step": first}


# --------------------------------------------------------------------------- rare events

RARE_MODEL = ModelRow(id=2, name="rare", task="binary_classification", features=[],
                      cohort_keys=[], classes=["0", "1"],
                      created_at=datetime(2026, 1, 1, tzinfo=UTC))
RARE_CASES = {"stationary": (1.0, 1.0), "scores x2": (2.0, 1.0),
              "true rate halved": (1.0, 0.5)}  # name -> (score factor, label-rate factor)


def rare_bucket(rng: np.random.Generator, n: int, case: str) -> OutcomeSummary:
    """n labeled predictions of a binary model with a 2% base rate: the true probability
    p ~ Beta(0.5, 24.5), the label drawn from p times the case's rate factor, the score p
    times its score factor (calibrated in "stationary")."""
    scale, rate = RARE_CASES[case]
    p = rng.beta(0.5, 24.5, size=n)
    rows = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.zeros(n))
    rows.score = np.clip(p * scale, 0.0, 1.0)
    rows.label = (rng.uniform(size=n) < p * rate).astype(np.float64)
    rows.label_delay = np.full(n, 60.0)
    return outcome_summary(ModelShape.of(RARE_MODEL), rows, count_predictions=True)


def outcome_windows(bucket: Callable[[int], OutcomeSummary], n: int, windows: int
                    ) -> Iterator[MergedWindow]:
    """``windows`` overlapping 1-hour windows of n labeled predictions (12 buckets each, at
    5-minute steps), their outcome summaries merged by addition."""
    sizes = bucket_sizes(n, windows + BUCKETS - 1)
    parts = [bucket(s) for s in sizes[:BUCKETS - 1]]
    for i in range(windows):
        parts.append(bucket(sizes[BUCKETS - 1 + i]))
        o = OutcomeSummary()
        for part in parts[-BUCKETS:]:
            o.add(part)
        parts = parts[-(BUCKETS - 1):]
        yield MergedWindow(version_id=1, start=datetime(2026, 1, 1, tzinfo=UTC),
                           end=datetime(2026, 1, 1, 1, tzinfo=UTC), outcome=o,
                           buckets=BUCKETS)


def rare(case: str, n: int, windows: int, seed: int) -> dict[str, Any]:
    """Windows of 12 buckets, every bucket of the case (changed from the first): the share
    flagged (warning or worse) and paged (critical) by the calibration check, and by ECE
    alone, ECE being what the check decided on before O / E."""
    rng = np.random.default_rng([seed, n, 100 + list(RARE_CASES).index(case)])
    th = Thresholds.from_settings(Settings())
    check, ece, ratios = [], [], []
    for w in outcome_windows(lambda size: rare_bucket(rng, size, case), n, windows):
        r = calibration(RARE_MODEL, w, th)
        check.append(SEVERITY[calibration_decision(r)])
        ece.append(SEVERITY[r.decision])
        if r.observed_expected is not None and r.observed_expected.stat is not None:
            ratios.append(r.observed_expected.stat.ratio or 0.0)
    c, e = np.array(check), np.array(ece)
    return {"case": case, "n": n, "windows": windows, "flagged": float(np.mean(c >= 1)),
            "paged": float(np.mean(c >= 2)), "ece_flagged": float(np.mean(e >= 1)),
            "oe_median": float(np.median(ratios)) if ratios else None}


# --------------------------------------------------------------------------- gap

GAP_COHORTS = 20
GAP_MODEL = ModelRow(id=3, name="gap", task="binary_classification", features=[],
                     cohort_keys=["cohort"], classes=["0", "1"],
                     created_at=datetime(2026, 1, 1, tzinfo=UTC))


def gap_world(seed: int, validation_rows: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """20 cohorts of unequal traffic (shares 1.3^-j) and error rates 0.05-0.30, and the
    training block a pipeline registers: each cohort's validation error measured on its
    share of ``validation_rows`` (so itself noisy), with those rows."""
    rng = np.random.default_rng([seed, 7])
    shares = 1.3 ** -np.arange(GAP_COHORTS)
    shares /= shares.sum()
    rates = rng.uniform(0.05, 0.30, size=GAP_COHORTS)
    v_rows = np.maximum(np.round(shares * validation_rows).astype(int), 1)
    v_err = rng.binomial(v_rows, rates) / v_rows
    names = [f"cohort=c{j:02d}" for j in range(GAP_COHORTS)]
    overall_v = float((v_err * v_rows).sum() / v_rows.sum())
    training = {"validation_error": overall_v, "validation_rows": int(v_rows.sum()),
                "cohort_validation_error": dict(zip(names, v_err.tolist(), strict=True)),
                "cohort_validation_rows": dict(zip(names, v_rows.tolist(), strict=True))}
    return shares, rates, training


def gap_bucket(rng: np.random.Generator, n: int, shares: np.ndarray, rates: np.ndarray
               ) -> OutcomeSummary:
    """n labeled predictions, each cohort wrong at its own (validation's true) rate: the
    score 0.9, the label 0 (a wrong prediction) with the cohort's error rate."""
    c = rng.choice(GAP_COHORTS, size=n, p=shares)
    rows = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.zeros(n))
    rows.cohorts["cohort"] = np.array([f"c{j:02d}" for j in c], dtype=object)
    rows.score = np.full(n, 0.9)
    rows.label = (rng.uniform(size=n) >= rates[c]).astype(np.float64)
    rows.label_delay = np.full(n, 60.0)
    return outcome_summary(ModelShape.of(GAP_MODEL), rows, count_predictions=True)


def gap_stationary(n: int, windows: int, seed: int, validation_rows: int,
                   rows_known: bool) -> dict[str, Any]:
    """Windows whose every cohort errs at its true validation rate: the share with any gap
    decision (overall or a cohort) warning or worse, and critical. ``rows_known``: the
    validation rows are registered (Fisher's test), else only the errors (binomial)."""
    shares, rates, training = gap_world(seed, validation_rows)
    if not rows_known:
        training = {k: v for k, v in training.items() if not k.endswith("_rows")}
    th = Thresholds.from_settings(Settings())
    rng = np.random.default_rng([seed, n, 200 + rows_known])
    worst, decided = [], 0
    for w in outcome_windows(lambda size: gap_bucket(rng, size, shares, rates), n, windows):
        r = generalization_gap(GAP_MODEL, w, th, training)
        subjects = [r.overall, *r.cohorts] if r.overall is not None else list(r.cohorts)
        worst.append(max(SEVERITY[g.decision] for g in subjects))
        decided += sum(g.decision != "insufficient_data" for g in subjects)
    x = np.array(worst)
    return {"n": n, "windows": windows, "validation_rows": validation_rows,
            "rows_known": rows_known, "flagged": float(np.mean(x >= 1)),
            "paged": float(np.mean(x >= 2)), "decided_per_window": decided / windows}


def run_rare(sizes: list[int], windows: int, seed: int) -> list[dict[str, Any]]:
    print(f"\nRare events (2% base rate): {windows} windows per case and n, every bucket "
          "changed; calibration check flagged / paged (ECE alone flagged; median O / E)")
    print("| case | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    out = []
    for case in RARE_CASES:
        cells = []
        for n in sizes:
            r = rare(case, n, windows, seed)
            out.append(r)
            oe = "-" if r["oe_median"] is None else f"{r['oe_median']:.2f}"
            cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])} "
                         f"(ECE {pct(r['ece_flagged'])}; O/E {oe})")
        print(f"| {case} | " + " | ".join(cells) + " |", flush=True)
    return out


def run_gap(sizes: list[int], windows: int, seed: int) -> list[dict[str, Any]]:
    print(f"\nGeneralization gap, 20 cohorts at their validation error: {windows} windows "
          "per n; windows with any gap warning or worse / critical (subjects decided per "
          "window)")
    print("| validation | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    out = []
    for v_rows, known in ((20_000, True), (20_000, False), (2_000, True)):
        cells = []
        for n in sizes:
            r = gap_stationary(n, windows, seed, v_rows, known)
            out.append(r)
            cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])} "
                         f"({r['decided_per_window']:.1f})")
        label = f"{v_rows:,} rows, {'rows registered' if known else 'errors only'}"
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return out


# --------------------------------------------------------------------------- multivariate

MV_MODEL = ModelRow(
    id=4, name="mv", task="binary_classification",
    features=[{"name": f"block{i}", "type": "numeric"} for i in range(4)]
    + [{"name": "pair0", "type": "numeric"}, {"name": "pair1", "type": "numeric"},
       {"name": "heavy", "type": "numeric"}, {"name": "lognormal", "type": "numeric"},
       {"name": "uniform", "type": "numeric"}, {"name": "missing", "type": "numeric"},
       {"name": "kind", "type": "categorical"}],
    cohort_keys=[], classes=["0", "1"], created_at=datetime(2026, 1, 1, tzinfo=UTC))
MV_RHO = 0.6  # the pair's correlation; "correlation flip" makes it -0.6


def mv_rows(rng: np.random.Generator, n: int, rho: float = MV_RHO) -> Rows:
    """Ten numeric features: a block of four sharing one factor (loading 0.8), a pair
    correlated ``rho`` (each N(0, 1) whatever rho: unchanged marginals), t3, lognormal,
    uniform and a normal with 5% missing; a categorical; a score."""
    rows = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.zeros(n))
    f = rng.normal(size=n)
    for i in range(4):
        rows.features[f"block{i}"] = 0.8 * f + 0.6 * rng.normal(size=n)
    a = rng.normal(size=n)
    rows.features["pair0"] = a
    rows.features["pair1"] = rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n)
    rows.features["heavy"] = _heavy(rng, n)
    rows.features["lognormal"] = _lognormal(rng, n)
    rows.features["uniform"] = _uniform(rng, n)
    rows.features["missing"] = _with_missing(_normal)(rng, n)
    rows.features["kind"] = _categorical(rng, n)
    rows.score = expit(SCORE_SCALE * rng.normal(size=n) + SCORE_SHIFT)
    return rows


class MvSim:
    """The multivariate world: its reference profile (10,000 rows), buckets folded by the
    service's ``drift_summaries``, windows decided by ``drift`` and ``multivariate``."""

    def __init__(self, seed: int) -> None:
        self.shape = ModelShape.of(MV_MODEL)
        ref = mv_rows(np.random.default_rng([seed, 40]), N_REFERENCE)
        self.cp = CompiledProfile.compile(build_profile(
            MV_MODEL, ref.features, prediction_values(self.shape, ref), ref.n), "mv")
        self.th = Thresholds.from_settings(Settings())

    def bucket(self, rng: np.random.Generator, n: int, rho: float) -> DriftSummary:
        rows = mv_rows(rng, n, rho)
        return drift_summaries(self.shape, self.cp, rows, np.zeros(n, dtype=np.int64), 1)[0]

    def decide(self, parts: list[DriftSummary]) -> tuple[str, str]:
        """(the multivariate decision, the worst univariate drift decision) of a window."""
        d = DriftSummary(self.cp.key, 0, np.zeros(self.cp.size, dtype=np.int64))
        for p in parts:
            d.add(p)
        w = MergedWindow(version_id=1, start=datetime(2026, 1, 1, tzinfo=UTC),
                         end=datetime(2026, 1, 1, 1, tzinfo=UTC),
                         outcome=OutcomeSummary(n=d.n), drift=d, buckets=len(parts))
        r = drift(w, self.cp, self.th)
        columns = [*r.features, *([r.prediction] if r.prediction is not None else [])]
        worst = max((c.decision or "ok" for c in columns), key=lambda x: SEVERITY[x])
        return multivariate(w, self.cp, self.th).decision, worst


def mv_flip(sim: MvSim, n: int, windows: int, seed: int, rho: float) -> dict[str, Any]:
    """Windows of 12 buckets, every bucket with the pair's correlation ``rho``: the share
    the multivariate check flags and pages, and the share any univariate column flags."""
    rng = np.random.default_rng([seed, n, 300])
    sizes = bucket_sizes(n, windows + BUCKETS - 1)
    parts = [sim.bucket(rng, s, rho) for s in sizes[:BUCKETS - 1]]
    mv, uni = [], []
    for i in range(windows):
        parts.append(sim.bucket(rng, sizes[BUCKETS - 1 + i], rho))
        m, u = sim.decide(parts[-BUCKETS:])
        parts = parts[-(BUCKETS - 1):]
        mv.append(SEVERITY[m])
        uni.append(SEVERITY[u])
    a, b = np.array(mv), np.array(uni)
    return {"n": n, "rho": rho, "windows": windows, "flagged": float(np.mean(a >= 1)),
            "paged": float(np.mean(a >= 2)), "univariate_flagged": float(np.mean(b >= 1))}


def mv_stationary(basis: Any, draw_matrix: Callable[[np.random.Generator, int], np.ndarray],
                  n: int, windows: int, seed: int) -> dict[str, Any]:
    """``windows`` overlapping 1-hour windows of stationary traffic: each bucket's error sums
    (the drift layout's last slots: ``error_sums``, which the kernel calls) added up and
    decided as ``multivariate`` decides; pages are runs of critical windows."""
    from app.monitoring.multivariate import error_sums, pca_error_drift

    th = Thresholds.from_settings(Settings())
    rng = np.random.default_rng([seed, n, 400])
    sizes = bucket_sizes(n, windows + BUCKETS - 1)
    parts = [error_sums(basis, draw_matrix(rng, s)) for s in sizes[:BUCKETS - 1]]
    worst, effects = [], []
    for i in range(windows):
        parts.append(error_sums(basis, draw_matrix(rng, sizes[BUCKETS - 1 + i])))
        r = pca_error_drift(basis, np.sum(parts[-BUCKETS:], axis=0), th.min_n)
        parts = parts[-(BUCKETS - 1):]
        if r.effect is not None:
            effects.append(abs(r.effect))
        worst.append(SEVERITY[decide(r, th)])
    runs = sum(1 for i, s in enumerate(worst) if s >= 2 and (i == 0 or worst[i - 1] < 2))
    w = np.array(worst)
    return {"n": n, "windows": windows, "flagged": float(np.mean(w >= 1)),
            "paged": float(np.mean(w >= 2)), "pages_per_30d": runs / windows * 8640,
            "max_abs_effect": max(effects) if effects else None}


def _matrix(names: tuple[str, ...], make: Callable[[np.random.Generator, int], Rows]
            ) -> Callable[[np.random.Generator, int], np.ndarray]:
    def draw_matrix(rng: np.random.Generator, n: int) -> np.ndarray:
        r = make(rng, n)
        return np.column_stack([r.features[f] for f in names])
    return draw_matrix


def run_multivariate(sizes: list[int], windows: int, stationary_windows: int, seed: int
                     ) -> dict[str, Any]:
    sim = MvSim(seed)
    basis = sim.cp.pca
    assert basis is not None
    print(f"\nMultivariate drift: 10 numeric features (PCA: {basis.components.shape[1]} "
          f"components, {100 * basis.explained:.0f}% of the variance); {windows} windows per "
          "n, every bucket changed; multivariate flagged / paged (any univariate column "
          "flagged)")
    print("| case | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    out: dict[str, Any] = {"flip": [], "stationary": []}
    for label, rho in (("stationary", MV_RHO), ("correlation flip 0.6 -> -0.6", -MV_RHO),
                       ("correlation 0.6 -> 0", 0.0)):
        cells = []
        for n in sizes:
            r = mv_flip(sim, n, windows, seed, rho)
            out["flip"].append(r)
            cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])} "
                         f"({pct(r['univariate_flagged'])})")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    big = Sim(seed)  # the 50-feature world of the stationary and shifted tables
    assert big.cp.pca is not None
    shapes = dict(FEATURES)
    worlds = (("10 features (above)", basis,
               _matrix(basis.features, lambda g, n: mv_rows(g, n))),
              ("50 features (stationary table's)", big.cp.pca,
               lambda g, n: np.column_stack([SHAPES[shapes[f]][0](g, n)
                                             for f in big.cp.pca.features])))
    print(f"\nMultivariate drift, stationary: {stationary_windows} overlapping 1-hour windows "
          "per n; flagged / paged; pages per 30 days; largest |effect| (sd)")
    print("| world | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for label, b, draw_matrix in worlds:
        cells = []
        for n in sizes:
            r = mv_stationary(b, draw_matrix, n, stationary_windows, seed)
            out["stationary"].append({"world": label, **r})
            eff = "-" if r["max_abs_effect"] is None else f"{r['max_abs_effect']:.3f}"
            cells.append(f"{pct(r['flagged'])} / {pct(r['paged'])}; "
                         f"{r['pages_per_30d']:.0f}; {eff}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x < 0.995 or x == 1 else f"{100 * x:.2f}%"


def _by_check(check: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: pct(r["flagged_by_check"][check])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,200,1000,10000,100000")
    ap.add_argument("--windows", type=int, default=24, help="stationary windows per n")
    ap.add_argument("--shift-windows", type=int, default=6)
    ap.add_argument("--full", action="store_true", help="8,640 stationary windows (30 days)")
    ap.add_argument("--only", choices=["stationary", "shifted", "rare", "gap", "cbpe",
                                       "multivariate", "embedding"],
                    default=None, help="one part only; rare, gap, cbpe, multivariate and "
                    "embedding run only when named")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--changes", default="",
                    help="shifted cases whose name contains one of these comma-separated "
                         "words (default: every case)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="stationary sizes decided in this many processes at once (decision "
                         "counts do not depend on the load; the run's seconds do)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    windows = 8640 if args.full else args.windows
    t0 = time.time()
    sim = Sim(args.seed)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}; {len(FEATURES)} features + the score, 10 cohorts, "
          f"reference {N_REFERENCE:,} rows, seed {args.seed}")
    results: dict[str, Any] = {"stationary": [], "shifted": []}
    if args.only == "rare":
        results["rare"] = run_rare(sizes, windows, args.seed)
    if args.only == "gap":
        results["gap"] = run_gap(sizes, windows, args.seed)
    if args.only == "cbpe":
        results["cbpe"] = [cbpe_shift.summary(cbpe_shift.run(n, windows, args.seed))
                           for n in sizes]
        cbpe_shift.print_table(results["cbpe"])
    if args.only == "multivariate":
        results["multivariate"] = run_multivariate(sizes, args.shift_windows, windows,
                                                   args.seed)
    if args.only == "embedding":
        results["embedding"] = embedding_shift.run(sizes, args.shift_windows, windows,
                                                   args.seed, pct, bucket_sizes)
    if args.only in (None, "stationary"):
        print(f"\nStationary: {windows} overlapping 1-hour windows per n (5-minute steps)")
        print("| predictions per window | " + " | ".join(f"{n:,}" for n in sizes) + " |")
        print("| --- |" + " --- |" * len(sizes))
        # Each n has its own random stream: the same figures whether run in turn or at once.
        # Each size's figures are printed as soon as it is done (a 30-day run takes hours).
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(stationary, sim, n, windows, args.seed) for n in sizes]
            for done in as_completed(futures):
                r = done.result()
                print(f"done n={r['n']:,} after {time.time() - t0:.0f} s: "
                      + json.dumps(r), flush=True)
            rows = [f.result() for f in futures]
        results["stationary"] = rows
        for label, get in (
            ("windows with any warning or worse", lambda r: pct(r["flagged"])),
            ("windows with any critical", lambda r: pct(r["paged"])),
            ("pages per 30 days (runs of critical windows)",
             lambda r: f"{r['pages_per_30d']:.0f}"),
            *((f"  {c}: warning or worse", _by_check(c))
              for c in ("drift", "data_quality", "calibration", "cohorts")),
            ("insufficient_data decisions per window",
             lambda r: f"{r['insufficient_per_window']:.1f}"),
        ):
            print(f"| {label} | " + " | ".join(get(r) for r in rows) + " |")
        for r in rows:
            top = ", ".join(f"{k} x{v}" for k, v in list(r["flagged_subjects"].items())[:8])
            print(f"flagged decisions at n={r['n']:,} (subject decision x windows): "
                  f"{top or 'none'}")
    if args.only in (None, "shifted"):
        print(f"\nShifted: {args.shift_windows} fully changed windows per case and n; "
              "flagged / paged share of them; first flag in 5-minute steps after the change "
              "began (12 = the first fully changed window; - = never)")
        print("| change | " + " | ".join(f"{n:,}" for n in sizes) + " |")
        print("| --- |" + " --- |" * len(sizes))
        words = [w for w in args.changes.split(",") if w]
        for ch in CHANGES:
            if words and not any(w in ch.name for w in words):
                continue
            cells = []
            for n in sizes:
                r = shifted(sim, ch, n, args.shift_windows, args.seed)
                results["shifted"].append(r)
                cell = f"{pct(r['flagged'])} / {pct(r['paged'])} @{r['first_flag_step'] or '-'}"
                if r["insufficient"] == 1:
                    cell = "insufficient"
                cells.append(cell)
            print(f"| {ch.name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")
    if args.json:
        print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
