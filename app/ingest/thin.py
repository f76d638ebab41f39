"""Thin outcome rows: predictions summarised where they were made, stored for pairing only.

A producer that sends its predictions as summaries (POST /v1/summaries: counts and drift)
sends each prediction once more as a thin row, in a batch marked ``"summarized": true``: id,
timestamp, version, prediction, cohorts (and an inline label, if any), never features. The
service stores it like any prediction (the same key ledger, so a retried row counts once), so
that a label arriving later, from anywhere, is paired with it by POST /v1/labels and its
outcome summed (calibration, cohort error, gap) by the service, once. A thin row counts in
no prediction count and no drift (the producer's summaries carry those): its ``features``
document is JSON ``null`` (THIN_FEATURES), which every reader of stored rows tells apart
(app/storage/observations.py).
"""

from __future__ import annotations

from typing import Any

from app.errors import Invalid, Problem

MARK = "summarized"
THIN_FEATURES = "null"  # the stored features document of a thin row
# Fields of a record that have no place in a thin row, and why.
_NOT_THIN = {
    "features": "a record of a summarized batch carries no features (its predictions are "
                "summarised where they were made, and the summaries hold their drift); send "
                "features in a batch without \"summarized\"",
    "latency_ms": "a record of a summarized batch carries no latency; send it in a batch "
                  "without \"summarized\"",
}
MISSING_FEATURES = ("required: an object of the record's features ({} when all are missing); "
                    "a prediction summarised elsewhere goes in a batch marked "
                    "\"summarized\": true")


def marked(body: dict[str, Any]) -> bool:
    """Whether a prediction batch is marked summarised; Invalid when the mark is not a
    boolean."""
    mark = body.get(MARK, False)
    if not isinstance(mark, bool):
        raise Invalid("validation_error", "the batch is malformed; nothing was stored",
                      [Problem(f"must be true or false, got {type(mark).__name__}",
                               field=MARK)])
    return mark


def record_problems(rec: dict[str, Any], summarized: bool, index: int,
                    out: list[Problem]) -> None:
    """A thin row with features or a latency, or a full record without features."""
    if not summarized:
        if "features" not in rec:
            out.append(Problem(MISSING_FEATURES, field="features", index=index))
        return
    for key, why in _NOT_THIN.items():
        if key in rec:
            out.append(Problem(why, field=key, index=index))
