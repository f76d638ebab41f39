"""Per subject, the shortest horizon that decides it: one pure rule for every check.

A subject (a feature, a cohort, the calibration of a version, a generalization gap) that the
job window is too small to decide is decided over the longer horizon
(MODELMON_JOB_LONG_WINDOW_SECONDS, 24 h) ending at the same boundary instead of staying
silent, when that horizon can decide it. Its rows then carry the longer window's start and
`horizon_seconds` in their detail; the job window's report keeps every other subject.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any

Report = Any  # a check's typed report, or None when the check does not apply
Subject = Any  # a frozen result with a ``gate`` and a ``horizon_seconds``
Subjects = dict[Hashable, Subject]
# what to keep of a subject: the subject itself, a marked copy, or None to leave it out
Pick = Callable[[Hashable, Subject], Subject | None]


@dataclass(frozen=True)
class Horizon:
    """How a check's report is seen as subjects: ``subjects`` lists them by key, ``keep``
    rebuilds the report with what ``pick`` keeps of each, and ``undecided`` is the gate (or
    the gates) of a subject the window was too small for."""

    subjects: Callable[[Report], Subjects]
    keep: Callable[[Report, Pick], Report]
    undecided: str | tuple[str, ...]

    def _small(self, s: Subject) -> bool:
        u = self.undecided
        return s.gate == u if isinstance(u, str) else s.gate in u

    def too_small(self, report: Report) -> bool:
        return any(self._small(s) for s in self.subjects(report).values())

    def split(self, short: Report, long: Report, horizon_seconds: float
              ) -> tuple[Report, Report]:
        """(the short window's report without the subjects the long one decides, the long
        one's report with only those, each marked with ``horizon_seconds``); neither input
        is changed (they are frozen)."""
        s, lg = self.subjects(short), self.subjects(long)
        moved = {k for k, v in s.items() if self._small(v) and k in lg
                 and not self._small(lg[k])}
        return (self.keep(short, lambda k, v: None if k in moved else v),
                self.keep(long, lambda k, v: replace(v, horizon_seconds=horizon_seconds)
                          if k in moved else None))


def _kept(items: tuple[Subject, ...], key: Callable[[Subject], Hashable], pick: Pick
          ) -> tuple[Subject, ...]:
    return tuple(kept for item in items if (kept := pick(key(item), item)) is not None)


def _drift_subjects(r: Report) -> Subjects:
    out: Subjects = {("feature", f.feature): f for f in r.features}
    if r.prediction is not None:
        out[("prediction",)] = r.prediction
    return out


DRIFT = Horizon(
    _drift_subjects,
    lambda r, pick: replace(
        r, features=_kept(r.features, lambda f: ("feature", f.feature), pick),
        prediction=None if r.prediction is None else pick(("prediction",), r.prediction)),
    "min_support")

CALIBRATION = Horizon(
    lambda r: {(): r} if r is not None else {},
    lambda r, pick: None if r is None else pick((), r),
    "min_support")

MULTIVARIATE = Horizon(
    lambda r: {(): r} if r is not None else {},
    lambda r, pick: None if r is None else pick((), r),
    "min_n")

EMBEDDING = Horizon(
    lambda r: {("feature", s.feature): s for s in r.features},
    lambda r, pick: replace(r, features=_kept(r.features, lambda s: ("feature", s.feature),
                                               pick)),
    ("min_n", "min_support"))

COHORTS = Horizon(
    lambda r: {(d.key, c.cohort): c for d in r.keys for c in d.cohorts},
    lambda r, pick: replace(r, keys=tuple(
        replace(d, cohorts=_kept(d.cohorts, lambda c, k=d.key: (k, c.cohort), pick))
        for d in r.keys)),
    "min_n")


def _gap_subjects(r: Report) -> Subjects:
    if r is None:
        return {}
    out: Subjects = {("cohort", c.cohort_key, c.cohort): c for c in r.cohorts}
    if r.overall is not None:
        out[("overall",)] = r.overall
    return out


GAP = Horizon(
    _gap_subjects,
    lambda r, pick: None if r is None else replace(
        r, overall=None if r.overall is None else pick(("overall",), r.overall),
        cohorts=_kept(r.cohorts, lambda c: ("cohort", c.cohort_key, c.cohort), pick)),
    "min_n")
