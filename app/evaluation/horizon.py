"""Per subject, the shortest horizon that decides it: one pure rule for every check.

A subject (a feature, a cohort, the calibration of a version, a generalization gap) that the
job window is too small to decide is decided over the longer horizon
(MODELMON_JOB_LONG_WINDOW_SECONDS, 24 h) ending at the same boundary instead of staying
silent, when that horizon can decide it. Its rows then carry the longer window's start and
`horizon_seconds` in their detail; the job window's report keeps every other subject.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

Report = Any  # a check's report: a dict, or None when the check does not apply
Subjects = dict[Hashable, dict[str, Any]]


@dataclass(frozen=True)
class Horizon:
    """How a check's report is seen as subjects: ``subjects`` lists them by key,
    ``keep`` rebuilds the report with only the given keys, and ``undecided`` is the gate of a
    subject the window was too small for."""

    subjects: Callable[[Report], Subjects]
    keep: Callable[[Report, set[Hashable]], Report]
    undecided: str

    def too_small(self, report: Report) -> bool:
        return any(s.get("gate") == self.undecided for s in self.subjects(report).values())

    def split(self, short: Report, long: Report, horizon_seconds: float
              ) -> tuple[Report, Report]:
        """(the short window's report without the subjects the long one decides, the long
        one's report with only those, each marked with ``horizon_seconds``)."""
        s, lg = self.subjects(short), self.subjects(long)
        moved = {k for k, v in s.items() if v.get("gate") == self.undecided
                 and k in lg and lg[k].get("gate") != self.undecided}
        for k in moved:
            lg[k]["horizon_seconds"] = horizon_seconds
        return self.keep(short, set(s) - moved), self.keep(long, moved)


def _drift_subjects(r: Report) -> Subjects:
    out: Subjects = {("feature", f["feature"]): f for f in r["features"]}
    if r["prediction"] is not None:
        out[("prediction",)] = r["prediction"]
    return out


DRIFT = Horizon(
    _drift_subjects,
    lambda r, keep: {**r, "features": [f for f in r["features"]
                                       if ("feature", f["feature"]) in keep],
                     "prediction": r["prediction"] if ("prediction",) in keep else None},
    "min_support")

CALIBRATION = Horizon(
    lambda r: {(): r} if r is not None else {},
    lambda r, keep: r if () in keep else None,
    "min_support")

COHORTS = Horizon(
    lambda r: {(key, c["cohort"]): c for key, d in r.items() for c in d["cohorts"]},
    lambda r, keep: {key: {**d, "cohorts": [c for c in d["cohorts"]
                                            if (key, c["cohort"]) in keep]}
                     for key, d in r.items()},
    "min_n")


def _gap_subjects(r: Report) -> Subjects:
    if r is None:
        return {}
    out: Subjects = {("cohort", c["cohort_key"], c["cohort"]): c for c in r["cohorts"]}
    if r["overall"] is not None:
        out[("overall",)] = r["overall"]
    return out


GAP = Horizon(
    _gap_subjects,
    lambda r, keep: None if r is None else {
        "overall": r["overall"] if ("overall",) in keep else None,
        "cohorts": [c for c in r["cohorts"]
                    if ("cohort", c["cohort_key"], c["cohort"]) in keep]},
    "min_n")
