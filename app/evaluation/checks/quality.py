"""Data-quality checks per column, apart from drift: missing values, numeric values outside
the reference's range, categories the reference never had. Each is a ``ColumnCheck``: the
drift job evaluates every declared one on each column it applies to, in the same pass and
with the same Bonferroni correction across the m columns, and stores one row per feature.
A new per-column check is one more declaration in ``COLUMN_CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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

Report = dict[str, Any]


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


@dataclass(frozen=True)
class ColumnCheck:
    """A per-column check: where it applies, what it adds to the column's report (its
    figures and its decision, under ``value`` and ``decision``), and what its stored row
    states (``method``, ``detail``)."""

    check: Check
    applies: Callable[[ColumnLayout], bool]
    evaluate: Callable[[ColumnWindow, Report, Thresholds, int], Report]
    value: str
    decision: str
    method: str
    detail: Callable[[Mapping[str, Any]], dict[str, Any]]

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


def _missing(cw: ColumnWindow, row: Report, th: Thresholds, m: int) -> Report:
    """Critical when every value of the window is missing (and the reference had values),
    warning when the missing rate rose by at least ``missing_rise`` and beyond noise
    (one-sided Fisher exact test, Bonferroni across the columns)."""
    total, n_ref_total = cw.total, cw.n_reference_total
    rate, ref_rate = row["missing_rate"], row["reference_missing_rate"]
    if total < th.min_n or rate is None or ref_rate is None:
        return {"missing_decision": INSUFFICIENT_DATA}
    if rate == 1.0 and ref_rate < 1.0:
        return {"missing_decision": CRITICAL}
    k, ref_k = round(rate * total), round(ref_rate * n_ref_total)
    return {"missing_decision": decide_share(
        k, total, ref_rate, th.missing_rise,
        lambda: fisher_exact_test(k, total, ref_k, n_ref_total).pvalue, th, m)}


def _has_range(col: ColumnLayout) -> bool:
    return not col.is_prediction and col.ks is not None and col.ks.points.shape[0] > 0


def _out_of_range(cw: ColumnWindow, _row: Report, th: Thresholds, m: int) -> Report:
    """The share of the window's values outside the reference's observed [min, max] (the
    first and last KS slots, since the KS sample keeps the reference's extremes), against the
    noise of a range fitted on n_ref draws."""
    assert cw.ks_slots is not None
    k, n_valid = int(cw.ks_slots[0] + cw.ks_slots[-1]), cw.n_valid
    null = out_of_range_null(cw.col.n_reference_valid, th.alpha_warning, m)
    return {"out_of_range_rate": k / n_valid if n_valid else None, "out_of_range_null": null,
            "out_of_range_decision": decide_share(
                k, n_valid, null, th.out_of_range_rise,
                lambda: binomial_excess(k, n_valid, null), th, m)}


def _is_categorical(col: ColumnLayout) -> bool:
    return (not col.is_prediction and not _has_range(col)
            and isinstance(col.binning, CategoricalBinning))


def _new_category(cw: ColumnWindow, _row: Report, th: Thresholds, m: int) -> Report:
    """The share in no reference category (the unseen bin, which also holds the reference's
    own folded rare categories) against the reference's share there."""
    assert isinstance(cw.col.binning, CategoricalBinning)
    u = cw.col.binning.unseen_index
    k, ref_k, n_valid = int(cw.counts[u]), int(cw.col.reference_counts[u]), cw.n_valid
    n_ref = cw.col.n_reference_valid
    base = ref_k / n_ref if n_ref else 0.0
    return {"new_category_rate": k / n_valid if n_valid else None,
            "reference_new_category_rate": base if n_ref else None,
            "new_category_decision": decide_share(
                k, n_valid, base, th.new_category_rise,
                lambda: fisher_exact_test(k, n_valid, ref_k, n_ref).pvalue, th, m)}


MISSING = ColumnCheck(
    Check("data_quality", "drift", "missing values: a rise of the missing rate beyond noise "
          "(warning); every value missing (critical)", ("alpha_warning", "min_n",
                                                       "missing_rise"),
          (Stores("feature_missing_ratio", "feature", "Share of missing values.",
                  "modelmon_feature_missing_ratio", subject_state=True),)),
    applies=lambda col: True, evaluate=_missing, value="missing_rate",
    decision="missing_decision", method="share of nulls",
    detail=lambda f: {"reference": f["reference_missing_rate"],
                      "thresholds": f["thresholds"]})

OUT_OF_RANGE = ColumnCheck(
    Check("out_of_range", "drift", "numeric values outside the reference's [min, max] "
          "beyond noise (warning, never critical)", ("alpha_warning", "min_n",
                                                    "out_of_range_rise"),
          (Stores("feature_out_of_range_ratio", "feature", "Share of a numeric feature's "
                  "values outside the reference's observed [min, max].",
                  "modelmon_feature_out_of_range_ratio", subject_state=True),)),
    applies=_has_range, evaluate=_out_of_range, value="out_of_range_rate",
    decision="out_of_range_decision",
    method="share outside the reference's [min, max]; binomial test against the "
           "Beta(2, n_ref - 1) quantile of the mass outside it",
    detail=lambda f: {"null": f["out_of_range_null"], "thresholds": f["thresholds"]})

NEW_CATEGORY = ColumnCheck(
    Check("new_category", "drift", "categorical values in no reference category beyond "
          "noise (warning, never critical)", ("alpha_warning", "min_n", "new_category_rise"),
          (Stores("feature_new_category_ratio", "feature", "Share of a categorical "
                  "feature's values in no reference category.",
                  "modelmon_feature_new_category_ratio", subject_state=True),)),
    applies=_is_categorical, evaluate=_new_category, value="new_category_rate",
    decision="new_category_decision",
    method="share in no reference category; Fisher exact test against the reference's share",
    detail=lambda f: {"reference": f["reference_new_category_rate"],
                      "thresholds": f["thresholds"]})

# Evaluated in this order on every column they apply to; a value never seen in the reference
# is a ticket, never a page: a change large enough to page shows as drift too.
COLUMN_CHECKS: tuple[ColumnCheck, ...] = (MISSING, OUT_OF_RANGE, NEW_CATEGORY)
