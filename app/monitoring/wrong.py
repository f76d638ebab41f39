"""The one rule for a wrong prediction: the SLO counters (ingest/slo.py, behind
``modelmon_prediction_errors_total``), the bucket summaries (evaluation/summaries.py, behind
``modelmon_error_ratio`` and the cohort error rates) and the tests' oracle all apply it, so
the two series cannot disagree on the same traffic.

- binary: predicted positive when the score is >= 0.5 (``THRESHOLD``); wrong when that is
  not the label.
- multiclass: the top class (ties to the first class, in the model's class order); wrong
  when it is not the label.
- A labeled prediction without a usable prediction (a NaN score; no finite probability
  mass) is wrong: the model failed to answer. Counting it by its label instead (a NaN score
  read as "negative") would make a model that stopped scoring look right on every negative
  label, and leaving it out would hide it from the error budget.

Regression has no wrong prediction (its error is a residual, not a count).
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLD = 0.5
BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"


def wrong(task: str, prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per labeled row, 1.0 when wrong and 0.0 when right (floats, so that sums per cohort
    add them). ``prediction``: the scores (binary, shape (n,)) or the probabilities in class
    order (multiclass, shape (n, k)); ``label``: 0/1 (binary) or the class index."""
    y = np.asarray(label, dtype=np.float64)
    if task == BINARY:
        score = np.asarray(prediction, dtype=np.float64)
        right = ~np.isnan(score) & ((score >= THRESHOLD) == (y == 1))
    elif task == MULTICLASS:
        p = np.asarray(prediction, dtype=np.float64)
        usable = np.isfinite(p).all(axis=1) & (p.sum(axis=1) > 0)
        top = np.argmax(np.where(usable[:, None], p, 0.0), axis=1)
        right = usable & (top == y)
    else:
        raise ValueError(f"no wrong prediction for task {task!r}")
    return (~right).astype(np.float64)


def is_wrong(task: str, prediction: Any, label: float) -> bool:
    """The same rule for one labeled prediction: a score (binary; None is missing) or a row
    of probabilities in class order (multiclass), and the label as in ``wrong``."""
    if task == BINARY:
        p = np.array([np.nan if prediction is None else prediction], dtype=np.float64)
    else:
        p = np.asarray(prediction, dtype=np.float64).reshape(1, -1)
    return bool(wrong(task, p, np.array([label], dtype=np.float64))[0])
