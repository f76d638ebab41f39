"""Performance estimated before labels (CBPE), end to end: a labeled reference uploaded, its
calibration maps in the profile; predictions without labels folded at ingest with them; the
drift job stores the estimates, equal to the estimator on the same rows; a window whose
precision fell decides a warning (a ticket) while no label has arrived; once labels come
(inline, before or after their predictions), the realized metrics beside the estimates are
those of the stored rows."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select

from app.evaluation import cbpe as cbpe_profile
from app.jobs import runner
from app.monitoring.cbpe import cbpe_sums, estimate, realized
from app.settings import Settings
from app.storage.tables import labels as labels_table
from app.storage.tables import metric_results, models, predictions
from tests.api.test_metrics import scrape
from tests.factories import iso
from tests.jobs_data import latest_window, post_all
from tests.pages.pageparse import number, parse

CLASSES = ["a", "b", "c"]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _binary(rng: np.random.Generator, n: int, loc: float, scale: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident scores; a covariate shift toward the boundary, where the positives the
    model predicts are barely more likely than not, lowers precision."""
    x = rng.normal(loc, scale, n)
    score = np.round(_sigmoid(3.0 * x), 6)
    y = (rng.uniform(size=n) < _sigmoid(1.5 * x)).astype(int)
    return score, y


def _stored(engine, metric_prefix: str = "estimated_") -> dict[str, object]:
    with engine.connect() as conn:
        return {r.metric: r for r in conn.execute(select(metric_results).where(
            metric_results.c.metric.like(f"{metric_prefix}%")))}


def _times(start, end, n, rng):
    span = (end - start).total_seconds() - 1
    return [iso(start + timedelta(seconds=float(s))) for s in np.sort(rng.uniform(0, span, n))]


def test_binary_estimate_stored_before_labels(client, engine, settings):
    rng = np.random.default_rng(5)
    client.post("/v1/models", json={"name": "churn", "task": "binary_classification",
                                    "features": [{"name": "x", "type": "numeric"}],
                                    "classes": ["stay", "leave"]})
    client.post("/v1/models/churn/versions", json={"version": "v1"})
    s_ref, y_ref = _binary(rng, 4000, 0.0, 1.5)
    ref = [{"x": float(s), "score": float(s), "label": ["stay", "leave"][int(y)]}
           for s, y in zip(s_ref, y_ref, strict=True)]
    r = client.post("/v1/models/churn/versions/v1/reference", json={"records": ref})
    assert r.status_code == 201, r.text
    pe = r.json()["performance_estimation"]
    assert pe["calibrated"] == [True] and pe["n_labeled"] == 4000
    section = cbpe_profile.reference_section("binary_classification", ("stay", "leave"),
                                             s_ref, np.array(["stay", "leave"])[y_ref])
    assert pe["realized"] == pytest.approx(section["realized"])
    start, end = latest_window()
    score, _ = _binary(rng, 3000, 0.2, 0.3)  # the shift: no label is sent
    ts = _times(start, end, score.shape[0], rng)
    post_all(client, "/v1/predictions", [
        {"model": "churn", "version": "v1", "prediction_id": f"p{i}", "timestamp": ts[i],
         "features": {"x": float(score[i])}, "prediction": {"score": float(score[i])}}
        for i in range(score.shape[0])])
    assert runner.tick(engine, settings, now=end)["success"] >= 1
    stored = _stored(engine)
    maps = cbpe_profile.maps_of(section)
    want = estimate(cbpe_sums(maps, score))
    for name in ("accuracy", "precision", "recall", "f1"):
        assert stored[f"estimated_{name}"].value == pytest.approx(
            getattr(want, name).value, abs=1e-9)
    assert stored["estimated_roc_auc"].value == pytest.approx(want.roc_auc, abs=1e-9)
    precision = stored["estimated_precision"]
    assert section["realized"]["precision"] - precision.value > 0.05
    assert precision.decision == "warning"  # a ticket by default, with no label at all
    params = {"start": iso(start), "end": iso(end)}
    rep = client.get("/v1/models/churn/reports/performance", params=params)
    assert rep.status_code == 200, rep.text
    v = rep.json()["versions"][0]
    assert v["decision"] == "warning" and v["realized"]["labeled"] == 0
    got = {m["metric"]: m for m in v["metrics"]}
    assert got["precision"]["estimate"] == pytest.approx(want.precision.value, abs=1e-9)
    page = parse(client.get("/ui/models/churn/versions/v1", params=params).text)
    shown = page.fields["id:performance-precision"]
    assert number(shown["estimate"]) == pytest.approx(want.precision.value, abs=1e-3)
    assert number(shown["reference"]) == pytest.approx(section["realized"]["precision"],
                                                       abs=1e-3)


def test_multiclass_reference_with_probabilities(client, engine, settings):
    rng = np.random.default_rng(8)
    client.post("/v1/models", json={"name": "iris", "task": "multiclass_classification",
                                    "features": [{"name": "petal", "type": "numeric"}],
                                    "classes": CLASSES})
    client.post("/v1/models/iris/versions", json={"version": "v1"})
    logits = rng.normal(size=(3000, 3))
    p = np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True)
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (truth.cumsum(axis=1) < rng.uniform(size=(3000, 1))).sum(axis=1)
    ref = [{"petal": float(p[i, 0]), "predicted_label": CLASSES[int(np.argmax(p[i]))],
            "label": CLASSES[int(y[i])],
            **{f"probabilities.{c}": float(p[i, j]) for j, c in enumerate(CLASSES)}}
           for i in range(3000)]
    r = client.post("/v1/models/iris/versions/v1/reference", json={"records": ref})
    assert r.status_code == 201, r.text
    assert len(r.json()["performance_estimation"]["calibrated"]) == 3
    start, end = latest_window()
    ts = _times(start, end, 500, rng)
    probs = rng.dirichlet([2, 1, 1], size=500)
    post_all(client, "/v1/predictions", [
        {"model": "iris", "version": "v1", "prediction_id": f"m{i}", "timestamp": ts[i],
         "features": {"petal": float(probs[i, 0])},
         "prediction": {"probabilities": dict(zip(CLASSES, map(float, probs[i]),
                                                  strict=True))}} for i in range(500)])
    assert runner.tick(engine, settings, now=end)["success"] >= 1
    stored = _stored(engine)
    assert {"estimated_accuracy", "estimated_f1", "estimated_roc_auc"} <= set(stored)
    assert 0 < stored["estimated_accuracy"].value < 1


def test_bad_reference_label_is_a_4xx(client):
    client.post("/v1/models", json={"name": "m", "task": "binary_classification",
                                    "features": [{"name": "x", "type": "numeric"}],
                                    "classes": ["no", "yes"]})
    client.post("/v1/models/m/versions", json={"version": "v1"})
    ref = [{"x": 0.1, "score": 0.1, "label": "maybe"}] * 200
    r = client.post("/v1/models/m/versions/v1/reference", json={"records": ref})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "label"


def _raw_realized(engine, model: str, start, end, classes: list[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The window's stored predictions joined with their stored labels, from the tables:
    (raw scores or probabilities in class order, label indices)."""
    p, lab, m = predictions, labels_table, models
    with engine.connect() as conn:
        rows = conn.execute(
            select(p.c.score, p.c.probabilities, lab.c.label_class)
            .join(m, m.c.id == p.c.model_id)
            .join(lab, (lab.c.model_id == p.c.model_id)
                  & (lab.c.prediction_id == p.c.prediction_id))
            .where(m.c.name == model, p.c.ts >= start, p.c.ts < end)).all()
    y = np.array([classes.index(r.label_class) for r in rows])
    if len(classes) == 2:
        return np.array([r.score for r in rows]), y
    probs = [r.probabilities if isinstance(r.probabilities, dict)
             else json.loads(r.probabilities) for r in rows]
    return np.array([[d.get(c, 0.0) for c in classes] for d in probs]), y


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_realized_beside_the_estimate_equals_the_stored_rows(client, engine, settings, task):
    """Labels inline, before their predictions and after them (through POST /v1/labels):
    the report's realized accuracy, precision, recall and F1 and labeled n are those of the
    stored predictions and labels, computed by scikit-learn; the page shows them beside the
    estimates; the labeled cohorts job stores them and /metrics exports them."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(11)
    classes = ["stay", "leave"] if task == "binary" else CLASSES
    k = len(classes)
    client.post("/v1/models", json={
        "name": "m", "task": f"{task}_classification", "classes": classes,
        "features": [{"name": "x", "type": "numeric"}]})
    client.post("/v1/models/m/versions", json={"version": "v1"})

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        if task == "binary":
            return _binary(rng, n, 0.0, 1.5)
        p = rng.dirichlet([3, 2, 1], size=n)
        return p, np.array([rng.choice(3, p=row) for row in p])

    def prediction(raw) -> dict:
        return ({"score": float(raw)} if task == "binary" else
                {"probabilities": dict(zip(classes, map(float, raw), strict=True))})

    ref_raw, ref_y = draw(1000)
    ref = [{"x": float(np.ravel(r)[0]), "label": classes[int(y)],
            **({"score": float(r)} if task == "binary" else
               {f"probabilities.{c}": float(r[j]) for j, c in enumerate(classes)})}
           for r, y in zip(ref_raw, ref_y, strict=True)]
    r = client.post("/v1/models/m/versions/v1/reference", json={"records": ref})
    assert r.status_code == 201, r.text
    start, end = latest_window()
    n = 1200
    raw, y = draw(n)
    ts = _times(start, end, n, rng)
    how = rng.choice(["inline", "before", "after", "never"], size=n, p=[0.3, 0.2, 0.3, 0.2])

    def label(i: int) -> dict:
        return {"model": "m", "prediction_id": f"p{i}", "label": classes[int(y[i])],
                "timestamp": iso(end + timedelta(seconds=5))}

    post_all(client, "/v1/labels", [label(i) for i in range(n) if how[i] == "before"])
    post_all(client, "/v1/predictions", [
        {"model": "m", "version": "v1", "prediction_id": f"p{i}", "timestamp": ts[i],
         "features": {"x": float(np.ravel(raw[i])[0])}, "prediction": prediction(raw[i]),
         **({"label": classes[int(y[i])]} if how[i] == "inline" else {})} for i in range(n)])
    post_all(client, "/v1/labels", [label(i) for i in range(n) if how[i] == "after"])

    params = {"start": iso(start), "end": iso(end)}
    rep = client.get("/v1/models/m/reports/performance", params=params)
    assert rep.status_code == 200, rep.text
    (v,) = rep.json()["versions"]
    got = v["realized"]
    stored_raw, stored_y = _raw_realized(engine, "m", start, end, classes)
    labeled = how != "never"
    assert got["labeled"] == stored_y.shape[0] == int(labeled.sum()) and got["reason"] is None
    predicted = ((stored_raw >= 0.5).astype(int) if k == 2
                 else np.argmax(stored_raw, axis=1))
    options = ({"average": "binary"} if k == 2
               else {"average": "macro", "labels": list(range(k))})
    want = {"accuracy": accuracy_score(stored_y, predicted),
            **{name: float(score(stored_y, predicted, zero_division=np.nan, **options))
               for name, score in (("precision", precision_score), ("recall", recall_score),
                                   ("f1", f1_score))}}
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    assert {m["metric"]: m["realized"] for m in v["metrics"]} == pytest.approx(
        {name: got[name] for name in want})
    # the generator's own arrays agree with the tables (nothing lost or paired wrongly)
    assert got["f1"] == pytest.approx(realized(k, raw[labeled], y[labeled])["f1"], rel=1e-12)

    page = parse(client.get("/ui/models/m/versions/v1", params=params).text)
    for name in want:
        shown = page.fields[f"id:performance-{name}"]
        assert number(shown["realized"]) == pytest.approx(got[name], abs=1e-3)

    assert runner.tick(engine, settings, now=end, jobs=["cohorts"]) == {"success": 1}
    stored, scraped = _stored(engine, "realized_"), scrape(client)
    assert set(stored) == {f"realized_{name}" for name in want}
    for name in want:
        row = stored[f"realized_{name}"]
        assert row.value == pytest.approx(got[name], rel=1e-12) and row.n == got["labeled"]
        assert scraped[(f"modelmon_realized_{name}_ratio", (("model", "m"), ("version", "v1")))
                       ] == pytest.approx(got[name], rel=1e-12)
