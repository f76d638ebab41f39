"""One rule for a wrong prediction (app/monitoring/wrong.py), applied by the SLO counters
(``modelmon_prediction_errors_total`` / ``modelmon_labeled_predictions_total``, counted as
pairs complete) and by the bucket summaries (``modelmon_error_ratio``, the cohorts job).

On a database (SQLite and PostgreSQL) the API's traffic makes the two series agree: inline
labels, labels after their prediction and labels before it. A NaN score cannot come through
the API (it is refused), and a NaN score in a stored summary breaks its calibration sums
(monitoring/calibration.py), so NaN scores are held equal at the fold: the same pairs through
the SLO counters' count and the summaries' outcome fold."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from app.evaluation.summaries import ModelShape, outcome_summary, rows_from_records
from app.ingest import slo
from app.ingest.schema import ModelSchema
from app.jobs import runner
from app.monitoring.wrong import is_wrong
from app.settings import Settings
from app.storage.registry import ModelRow
from tests.api.test_metrics import scrape
from tests.jobs_data import drift_model, labels_for, latest_window, post_all, traffic


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1, metrics_cache_seconds=0)


def test_slo_errors_and_error_ratio_agree_on_the_same_traffic(app, client, engine, settings):
    assert client.post("/v1/models", json=drift_model()).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    start, end = latest_window()
    rng = np.random.default_rng(3)
    records, scores, y, _ = traffic(rng, 400, start, end)
    for r, label in zip(records[:50], y[:50], strict=True):  # inline labels
        r["label"] = "bad" if label else "good"
    post_all(client, "/v1/predictions", records[:300])
    post_all(client, "/v1/labels", labels_for(records[50:], y[50:]))  # 100 before their pred.
    post_all(client, "/v1/predictions", records[300:])
    assert runner.tick(engine, settings, now=end, jobs=["cohorts"]) == {"success": 1}

    s = scrape(client)
    m = (("model", "credit"),)
    labeled = s[("modelmon_labeled_predictions_total", m)]
    errors = s[("modelmon_prediction_errors_total", m)]
    assert labeled == 400
    assert errors == sum(is_wrong("binary_classification", p, t) for p, t in zip(
        scores, y, strict=True)) == int(((scores >= 0.5) != (y == 1)).sum())
    ratio = s[("modelmon_error_ratio", (("model", "credit"), ("version", "v1")))]
    assert ratio == pytest.approx(errors / labeled, rel=1e-12)


ROW = {"binary_classification": ModelRow(1, "b", "binary_classification", [], [],
                                         ["good", "bad"], datetime(2026, 1, 1, tzinfo=UTC)),
       "multiclass_classification": ModelRow(2, "m", "multiclass_classification", [], [],
                                             ["a", "b", "c"], datetime(2026, 1, 1, tzinfo=UTC))}


@pytest.mark.parametrize("task", sorted(ROW))
def test_slo_counters_and_summaries_count_the_same_errors_nan_scores_included(task: str):
    rng = np.random.default_rng(5)
    row = ROW[task]
    schema = ModelSchema.build(row, {"v1": 1})
    n = 500
    classes = row.classes
    labels = [classes[i] for i in rng.integers(0, len(classes), n)]
    if task == "binary_classification":
        score = [float(x) for x in rng.random(n)]
        for i in rng.choice(n, 60, replace=False):  # NaN scores, and NULL as SQLite reads NaN
            score[i] = None if i % 2 else float("nan")
        score[:4] = [0.5, 0.5, 0.4999, 0.5001]  # at the threshold
        probs = [None] * n
    else:
        score = [None] * n
        p = rng.dirichlet(np.ones(len(classes)), n)
        p[:10] = [0.4, 0.4, 0.2]  # ties go to the first class
        probs = [dict(zip(classes, map(float, x), strict=True)) for x in p]
        probs[10:20] = [None] * 10  # no probabilities: wrong
    pairs = [slo.Pair(1, s, p, c) for s, p, c in zip(score, probs, labels, strict=True)]
    counted = slo.wrong_count(schema, pairs)

    shape = ModelShape.of(row)
    rows = rows_from_records(shape, [1] * n, [0.0] * n, [{}] * n, [{}] * n, score, [None] * n,
                             probs, labels, [None] * n, [0.0] * n)
    folded = outcome_summary(shape, rows, count_predictions=True)
    assert (folded.labeled, folded.errors) == (n, counted)
    # the rule, by hand: NaN and missing predictions are wrong
    expected = 0
    for s, p, c in zip(score, probs, labels, strict=True):
        if task == "binary_classification":
            expected += s is None or s != s or (s >= 0.5) != (c == "bad")
        else:
            expected += p is None or max(classes, key=lambda k: (p[k], -classes.index(k))) != c
    assert counted == expected
