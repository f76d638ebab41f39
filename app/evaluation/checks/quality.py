"""Data-quality checks per column, apart from drift: missing values, numeric values outside
the reference's range, categories the reference never had. Each is a ``ColumnCheck``: the
drift job evaluates every declared one on each column it applies to, in the same pass and
with the same Bonferroni correction across the m columns, and stores one row per feature.
A new per-column check is one more declaration in ``COLUMN_CHECKS`` and the frozen
``QualityResult`` it decides (its figures in the column's report, its stored detail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from app.evaluation.checks.declare import Check, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import ColumnLayout
from app.monitoring import INSUFFICIENT_DATA
from app.monitoring.binning import CategoricalBinning
from app.monitoring.gates import (
    binomial_excess,
    bonferroni_adjust,
    fisher_exact_test,
    out_of_range_null,
)


@dataclass(frozen=True)
class ColumnWindow:
    """One column's counts in a merged window: its PSI bins (missing last) and, for a
    numeric column, its KS slots."""

    col: ColumnLayout
    counts: np.ndarray
    ks_slots: np.ndarray | None

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def n_valid(self) -> int:
        return self.total - int(self.counts[-1])

    @property
    def n_reference_total(self) -> int:
        return self.col.n_reference_valid + self.col.n_reference_missing

    @property
    def missing_rate(self) -> float | None:
        total = self.total
        return float(self.counts[-1] / total) if total else None

    @property
    def reference_missing_rate(self) -> float | None:
        n_ref_total = self.n_reference_total
        return self.col.n_reference_missing / n_ref_total if n_ref_total else None


@dataclass(frozen=True, slots=True)
class QualityResult:
    """What one per-column check decided: its figure (``value``, None when the window has no
    value to count), its figures as the column's report states them and its decision (the
    report's ``<key>_decision``), and what its stored row states beside them (``reference``
    or ``null``)."""

    key: ClassVar[str]
    decision: str

    @property
    def value(self) -> float | None:
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        return {}

    def detail(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {**self.figures(), f"{self.key}_decision": self.decision}


@dataclass(frozen=True, slots=True)
class Missing(QualityResult):
    """The missing rate itself is the column's (``missing_rate`` in its report)."""

    key: ClassVar[str] = "missing"
    rate: float | None = None
    reference_rate: float | None = None

    @property
    def value(self) -> float | None:
        return self.rate

    def detail(self) -> dict[str, Any]:
        return {"reference": self.reference_rate}


@dataclass(frozen=True, slots=True)
class OutOfRange(QualityResult):
    key: ClassVar[str] = "out_of_range"
    rate: float | None = None
    null: float = 0.0

    @property
    def value(self) -> float | None:
        return self.rate

    def figures(self) -> dict[str, Any]:
        return {"out_of_range_rate": self.rate, "out_of_range_null": self.null}

    def detail(self) -> dict[str, Any]:
        return {"null": self.null}


@dataclass(frozen=True, slots=True)
class NewCategory(QualityResult):
    key: ClassVar[str] = "new_category"
    rate: float | None = None
    reference_rate: float | None = None

    @property
    def value(self) -> float | None:
        return self.rate

    def figures(self) -> dict[str, Any]:
        return {"new_category_rate": self.rate,
                "reference_new_category_rate": self.reference_rate}

    def detail(self) -> dict[str, Any]:
        return {"reference": self.reference_rate}


@dataclass(frozen=True)
class ColumnCheck:
    """A per-column check: where it applies, what it decides on a column's window (a
    ``QualityResult``: its figures and its decision), and the method its stored row
    states."""

    check: Check
    applies: Callable[[ColumnLayout], bool]
    evaluate: Callable[[ColumnWindow, Thresholds, int], QualityResult]
    result: type[QualityResult]
    method: str

    @property
    def metric(self) -> str:
        return self.check.stores[0].name


def decide_share(k: int, n: int, base: float, rise: float, pvalue: Callable[[], float],
                 th: Thresholds, m: int) -> str:
    """Warning when k of n exceeds the baseline share by ``rise`` and ``pvalue()`` (one
    sided) stays below alpha_warning after Bonferroni across the m columns."""
    if n < th.min_n:
        return INSUFFICIENT_DATA
    if k / n - base < rise:
        return OK
    return WARNING if bonferroni_adjust(pvalue(), m) < th.alpha_warning else OK


def _missing(cw: ColumnWindow, th: Thresholds, m: int) -> Missing:
    """Critical when every value of the window is missing (and the reference had values),
    warning when the missing rate rose by at least ``missing_rise`` and beyond noise
    (one-sided Fisher exact test, Bonferroni across the columns)."""
    total, n_ref_total = cw.total, cw.n_reference_total
    rate, ref_rate = cw.missing_rate, cw.reference_missing_rate
    if total < th.min_n or rate is None or ref_rate is None:
        return Missing(INSUFFICIENT_DATA, rate, ref_rate)
    if rate == 1.0 and ref_rate < 1.0:
        return Missing(CRITICAL, rate, ref_rate)
    k, ref_k = round(rate * total), round(ref_rate * n_ref_total)
    return Missing(decide_share(
        k, total, ref_rate, th.missing_rise,
        lambda: fisher_exact_test(k, total, ref_k, n_ref_total).pvalue, th, m), rate, ref_rate)


def _has_range(col: ColumnLayout) -> bool:
    return not col.is_prediction and col.ks is not None and col.ks.points.shape[0] > 0


def _out_of_range(cw: ColumnWindow, th: Thresholds, m: int) -> OutOfRange:
    """The share of the window's values outside the reference's observed [min, max] (the
    first and last KS slots, since the KS sample keeps the reference's extremes), against the
    noise of a range fitted on n_ref draws."""
    assert cw.ks_slots is not None
    k, n_valid = int(cw.ks_slots[0] + cw.ks_slots[-1]), cw.n_valid
    null = out_of_range_null(cw.col.n_reference_valid, th.alpha_warning, m)
    return OutOfRange(decide_share(k, n_valid, null, th.out_of_range_rise,
                                   lambda: binomial_excess(k, n_valid, null), th, m),
                      k / n_valid if n_valid else None, null)


def _is_categorical(col: ColumnLayout) -> bool:
    return (not col.is_prediction and not _has_range(col)
            and isinstance(col.binning, CategoricalBinning))


def _new_category(cw: ColumnWindow, th: Thresholds, m: int) -> NewCategory:
    """The share in no reference category (the unseen bin, which also holds the reference's
    own folded rare categories) against the reference's share there."""
    assert isinstance(cw.col.binning, CategoricalBinning)
    u = cw.col.binning.unseen_index
    k, ref_k, n_valid = int(cw.counts[u]), int(cw.col.reference_counts[u]), cw.n_valid
    n_ref = cw.col.n_reference_valid
    base = ref_k / n_ref if n_ref else 0.0
    return NewCategory(decide_share(k, n_valid, base, th.new_category_rise,
                                    lambda: fisher_exact_test(k, n_valid, ref_k, n_ref).pvalue,
                                    th, m),
                       k / n_valid if n_valid else None, base if n_ref else None)


MISSING = ColumnCheck(
    Check("data_quality", "drift", "missing values: a rise of the missing rate beyond noise "
          "(warning); every value missing (critical)", ("alpha_warning", "min_n",
                                                       "missing_rise"),
          (Stores("feature_missing_ratio", "feature", "Share of missing values.",
                  "modelmon_feature_missing_ratio", subject_state=True),)),
    applies=lambda col: True, evaluate=_missing, result=Missing, method="share of nulls")

OUT_OF_RANGE = ColumnCheck(
    Check("out_of_range", "drift", "numeric values outside the reference's [min, max] "
          "beyond noise (warning, never critical)", ("alpha_warning", "min_n",
                                                    "out_of_range_rise"),
          (Stores("feature_out_of_range_ratio", "feature", "Share of a numeric feature's "
                  "values outside the reference's observed [min, max].",
                  "modelmon_feature_out_of_range_ratio", subject_state=True),)),
    applies=_has_range, evaluate=_out_of_range, result=OutOfRange,
    method="share outside the reference's [min, max]; binomial test against the "
           "Beta(2, n_ref - 1) quantile of the mass outside it")

NEW_CATEGORY = ColumnCheck(
    Check("new_category", "drift", "categorical values in no reference category beyond "
          "noise (warning, never critical)", ("alpha_warning", "min_n", "new_category_rise"),
          (Stores("feature_new_category_ratio", "feature", "Share of a categorical "
                  "feature's values in no reference category.",
                  "modelmon_feature_new_category_ratio", subject_state=True),)),
    applies=_is_categorical, evaluate=_new_category, result=NewCategory,
    method="share in no reference category; Fisher exact test against the reference's share")

# Evaluated in this order on every column they apply to; a value never seen in the reference
# is a ticket, never a page: a change large enough to page shows as drift too.
COLUMN_CHECKS: tuple[ColumnCheck, ...] = (MISSING, OUT_OF_RANGE, NEW_CATEGORY)
# The check that decided each kind of result, for its stored row.
CHECK_OF: dict[str, ColumnCheck] = {c.result.key: c for c in COLUMN_CHECKS}
