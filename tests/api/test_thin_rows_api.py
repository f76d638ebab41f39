"""Thin outcome rows (POST /v1/predictions with "summarized": true): predictions summarised
elsewhere, stored for label pairing only. With the producer's summaries they give the reports
raw ingest gives: their labels paired by the service (before or after the row), their
predictions and drift counted once (by the summaries), retries stored once, the summary audit
content with them; a thin row with features and a record without either is a clear 422."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from app.evaluation.profiles import ProfileCache
from app.evaluation.references import reference_for
from app.jobs import runner
from app.settings import Settings
from app.storage import registry
from app.storage.tables import bucket_summaries, labels, predictions
from tests.api.test_summaries_api import (
    comparable,
    folded,
    post_raw,
    reports,
    setup_model,
    traffic,
    upload,
    window,
)
from tests.factories import NOW, binary_model, iso, register


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_interval_seconds=300)


def thin_rows(model: str, recs: list[dict]) -> list[dict]:
    """The records as thin rows: no features; inline labels stay inline."""
    out = []
    for r in recs:
        row = {"model": model, "version": "v1", "prediction_id": r["prediction_id"],
               "timestamp": iso(r["timestamp"]), "prediction": r["prediction"],
               "cohorts": r["cohorts"]}
        if "label" in r and r["label_timestamp"] == r["timestamp"]:
            row["label"] = r["label"]
        out.append(row)
    return out


def later_labels(model: str, recs: list[dict]) -> list[dict]:
    return [{"model": model, "prediction_id": r["prediction_id"], "label": r["label"],
             "timestamp": iso(r["label_timestamp"])}
            for r in recs if "label" in r and r["label_timestamp"] != r["timestamp"]]


def post(client, path: str, body: dict) -> dict:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def send_thin(client, model: str, recs: list[dict]) -> None:
    """As a summarizing producer does: the predictions' summaries without their labels, thin
    rows, labels; half of the later labels before their rows (they wait), half after."""
    doc, rows = folded(client, model, [{k: v for k, v in r.items()
                                        if k not in ("label", "label_timestamp")}
                                       for r in recs])
    post(client, "/v1/summaries", upload(doc, rows))
    marks = later_labels(model, recs)
    post(client, "/v1/labels", {"records": marks[::2]})
    thin = thin_rows(model, recs)
    for i in range(0, len(thin), 250):
        assert post(client, "/v1/predictions", {"summarized": True,
                                                "records": thin[i:i + 250]})["duplicates"] == 0
    post(client, "/v1/labels", {"records": marks[1::2]})


def audit(engine, settings, at) -> dict:
    runner._last_audit.clear()  # this process may have audited another test's database
    with engine.connect() as conn:
        models = [m for m, _ in registry.list_models(conn=conn)]
    return runner.maintain_summaries(engine, settings, at, ProfileCache(), models)


def test_thin_rows_pair_labels_once_and_count_no_prediction(client, engine, settings):
    recs = traffic(800, seed=21)
    setup_model(client, "raw")
    setup_model(client, "edge")
    post_raw(client, "raw", recs)
    send_thin(client, "edge", recs)
    expected = comparable(reports(client, "raw"))
    assert comparable(reports(client, "edge")) == expected
    assert reports(client, "edge")["drift"]["versions"][0]["n"] == 800

    # every thin row and label sent again: stored once
    thin = thin_rows("edge", recs)
    again = post(client, "/v1/predictions", {"summarized": True, "records": thin[:500]})
    assert again == {"accepted": 0, "duplicates": 500}
    assert post(client, "/v1/labels", {"records": later_labels("edge", recs)})["duplicates"] \
        == len(later_labels("edge", recs))
    assert comparable(reports(client, "edge")) == expected

    # the audit finds the stored rows counted (thin rows: their pairs only) and repairs nothing
    _, end = window()
    out = audit(engine, settings, end + timedelta(seconds=1))
    assert out["audited_buckets"] >= 12 and out["repaired_buckets"] == 0
    assert comparable(reports(client, "edge")) == expected

    # the service's own pair sums of the thin rows lost (a restore, rows copied by hand): the
    # audit sums them again from the thin rows, and counts none of them as a prediction
    b = bucket_summaries
    with engine.begin() as conn:
        edge = registry.get_models(conn=conn, names={"edge"})["edge"].id
        gone = conn.execute(delete(b).where(b.c.model_id == edge, b.c.origin == "",
                                            b.c.kind == "outcome")).rowcount
    assert gone >= 12
    assert comparable(reports(client, "edge")) != expected
    assert audit(engine, settings, end + timedelta(seconds=2))["repaired_buckets"] == 12
    assert comparable(reports(client, "edge")) == expected
    assert audit(engine, settings, end + timedelta(seconds=3))["repaired_buckets"] == 0

    with engine.connect() as conn:
        stored = conn.execute(select(predictions.c.features).where(
            predictions.c.model_id == edge)).scalars().all()
        paired = conn.execute(select(labels.c.source).where(labels.c.model_id == edge)).all()
    assert len(stored) == 800 and set(stored) == {None}  # the JSON null document
    assert len(paired) == sum("label" in r for r in recs)


def test_thin_rows_are_no_traffic_to_fit_a_baseline_from(client, engine, settings):
    """Thin rows carry no features: a version's baseline is fitted from its full rows only,
    and a version with thin rows only has no traffic to fit one from."""
    recs = traffic(100, seed=22)
    register(client, binary_model("edge"))
    post(client, "/v1/predictions", {"summarized": True, "records": thin_rows("edge", recs)})

    def reference() -> dict:
        with engine.connect() as conn:
            model = registry.get_models(conn=conn, names={"edge"})["edge"]
            vid = registry.version_ids(conn=conn, model_ids={model.id})[(model.id, "v1")]
            return reference_for(conn=conn, model=model, version_id=vid, settings=settings,
                                 now=NOW, profiles=ProfileCache()).info

    assert reference()["source"] == "none"
    full = [{k: v for k, v in r.items() if k != "label"} | {"prediction_id": f"full-{i}",
                                                            "features": {"amount": 5.0}}
            for i, r in enumerate(thin_rows("edge", recs[:3]))]
    post(client, "/v1/predictions", {"records": full})
    assert reference()["source"] == "baseline" and reference()["n_rows"] == 3


@pytest.mark.parametrize("case", ["features", "latency", "mark", "unmarked"])
def test_a_thin_row_with_features_or_a_record_without_them_is_a_clear_422(client, case):
    setup_model(client, "edge")
    rec = thin_rows("edge", traffic(3, seed=23))
    body: dict = {"summarized": True, "records": rec}
    where, says = {"features": ([("features", 1)], "summarized"),
                   "latency": ([("latency_ms", 2)], "summarized"),
                   "mark": ([("summarized", None)], "true or false"),
                   "unmarked": ([("features", i) for i in range(3)], "summarized")}[case]
    if case == "features":
        rec[1]["features"] = {"amount": 1.0}
    elif case == "latency":
        rec[2]["latency_ms"] = 3.0
    elif case == "mark":
        body["summarized"] = "yes"
    else:
        del body["summarized"]
    r = client.post("/v1/predictions", json=body)
    assert r.status_code == 422, r.text
    problems = r.json()["details"]
    assert [(p["field"], p.get("index")) for p in problems] == where, problems
    assert all(says in p["problem"] for p in problems), problems
    assert post(client, "/v1/predictions", {"summarized": True, "records": thin_rows(
        "edge", traffic(3, seed=23))}) == {"accepted": 3, "duplicates": 0}
