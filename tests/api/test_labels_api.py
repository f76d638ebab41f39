"""POST /v1/labels: labels before and after their predictions, duplicates, clear 4xx."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.factories import label, prediction, register, regression_model
from tests.helpers import stored, stored_labels


def test_labels_after_predictions_match(client, engine):
    register(client)
    client.post("/v1/predictions", json={"records": [prediction(i) for i in range(3)]})
    r = client.post("/v1/labels", json={"records": [label(0), label(1, value="legit")]})
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 2, "pending": 0, "duplicates": 0}
    rows = stored_labels(engine)
    assert [(row.prediction_id, row.label_class, row.source) for row in rows] == [
        ("p-0", "fraud", "labels"), ("p-1", "legit", "labels")]


def test_labels_before_predictions_are_kept_and_join_later(client, engine):
    register(client)
    r = client.post("/v1/labels", json={"records": [label(0), label(1)]})
    assert r.json() == {"matched": 0, "pending": 2, "duplicates": 0}
    assert stored(engine)["labels"] == 2
    client.post("/v1/predictions", json={"records": [prediction(0), prediction(1)]})
    # A re-sent label is a duplicate either way; the join itself happens at compute time.
    again = client.post("/v1/labels", json={"records": [label(0), label(2)]})
    assert again.json() == {"matched": 0, "pending": 1, "duplicates": 1}
    client.post("/v1/predictions", json={"records": [prediction(2)]})
    # every label now has its prediction: the join by (model, prediction_id) is complete
    with engine.connect() as conn:
        from sqlalchemy import text

        joined = conn.execute(text(
            "SELECT count(*) FROM labels l JOIN predictions p "
            "ON p.model_id = l.model_id AND p.prediction_id = l.prediction_id")).scalar_one()
    assert joined == 3


def test_label_duplicates_first_value_wins(client, engine):
    register(client)
    client.post("/v1/predictions", json={"records": [prediction(0)]})
    client.post("/v1/labels", json={"records": [label(0, value="fraud")]})
    r = client.post("/v1/labels", json={"records": [label(0, value="legit"),
                                                    label(0, value="legit")]})
    assert r.json() == {"matched": 0, "pending": 0, "duplicates": 2}
    assert [row.label_class for row in stored_labels(engine)] == ["fraud"]


def test_inline_label_counts_as_stored_label(client, engine):
    register(client)
    client.post("/v1/predictions", json={"records": [prediction(0, label="legit")]})
    assert client.post("/v1/labels", json={"records": [label(0)]}).json()["duplicates"] == 1
    assert [row.source for row in stored_labels(engine)] == ["inline"]


def test_regression_labels_are_numbers(client, engine):
    register(client, regression_model())
    ok = client.post("/v1/labels", json={"records": [label(0, model="eta", value=12.5)]})
    assert ok.json() == {"matched": 0, "pending": 1, "duplicates": 0}
    bad = client.post("/v1/labels", json={"records": [label(1, model="eta", value="late")]})
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "label"
    assert stored_labels(engine)[0].label_value == 12.5


@pytest.mark.parametrize("change, field", [
    ({"label": "maybe"}, "label"),
    ({"label": None}, "label"),
    ({"timestamp": "soon"}, "timestamp"),
    ({"prediction_id": None}, "prediction_id"),
    ({"version": "v1"}, "version"),
])
def test_bad_labels_are_422_and_nothing_stored(client, engine, change, field):
    register(client)
    bad = label(1)
    bad.update(change)
    r = client.post("/v1/labels", json={"records": [label(0), bad]})
    assert r.status_code == 422, r.text
    assert (1, field) in [(d.get("index"), d.get("field")) for d in r.json()["details"]]
    assert stored(engine)["labels"] == 0


def test_label_for_unknown_model_is_404(client, engine):
    register(client)
    r = client.post("/v1/labels", json={"records": [label(0), label(1, model="ghost")]})
    assert r.status_code == 404
    assert r.json()["details"][0] == {"index": 1, "field": "model",
                                      "problem": "unknown model; register it with POST /v1/models"}
    assert stored(engine)["labels"] == 0


@pytest.mark.parametrize("settings", [{"max_pending_labels": 3}], indirect=True)
def test_labels_waiting_for_predictions_are_capped_per_model(client, engine, settings):
    """A model holds at most MODELMON_MAX_PENDING_LABELS labels whose prediction is not
    stored; a batch that would pass it is refused whole (422 naming each waiting label),
    and the count follows labels that pair later and retention's exact recount."""
    from datetime import timedelta

    from sqlalchemy import select

    from app.jobs.retention import run_retention
    from app.storage.pending import waiting_query
    from app.storage.tables import pending_labels

    def counted() -> dict[int, int]:
        with engine.connect() as conn:
            kept = dict(conn.execute(select(pending_labels.c.model_id,
                                            pending_labels.c.n)).all())
            assert {m: n for m, n in kept.items() if n} == dict(
                conn.execute(waiting_query()).all())  # the ledger equals the exact count
        return kept

    register(client)
    client.post("/v1/predictions", json={"records": [prediction(0)]})
    r = client.post("/v1/labels", json={"records": [label(0), label(1), label(2)]})
    assert r.json() == {"matched": 1, "pending": 2, "duplicates": 0}
    assert counted() == {1: 2}
    before = stored(engine)["labels"]
    r = client.post("/v1/labels", json={"records": [label(3), label(0), label(4)]})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "too_many_pending_labels" and "fraud" in body["message"]
    assert [(d["index"], d["field"]) for d in body["details"]] == [
        (0, "prediction_id"), (2, "prediction_id")]
    assert stored(engine)["labels"] == before and counted() == {1: 2}  # nothing stored
    client.post("/v1/predictions", json={"records": [prediction(1)]})  # pairs one
    assert counted() == {1: 1}
    r = client.post("/v1/labels", json={"records": [label(3), label(4)]})
    assert r.json() == {"matched": 0, "pending": 2, "duplicates": 0}
    assert counted() == {1: 3}
    assert client.post("/v1/labels", json={"records": [label(5)]}).status_code == 422
    # Retention deletes the labels once they are past it, and counts again.
    run_retention(engine, settings, client.app.state.partitions,
                  now=datetime.now(UTC) + timedelta(days=settings.retention_days + 2))
    assert counted() == {}


@pytest.mark.parametrize("settings", [{}, {"pairing_locks": "striped"}], indirect=True,
                         ids=["model", "striped"])
def test_labels_and_predictions_in_flight_together_pair_each_once(live_server, client, engine):
    """Prediction batches, label batches for the same ids (grouped otherwise, each sent twice
    as a retry would) all at once: every label is stored once, and each pair is counted once
    in the SLO counters and the bucket summaries, whichever of the two came first."""
    register(client)
    sends = [("/v1/predictions", [prediction(i) for i in range(k, k + 50)])
             for k in range(0, IN_FLIGHT, 50)]
    sends += [("/v1/labels", [label(i, value=_value(i)) for i in range(k, IN_FLIGHT, 8)][::-1])
              for k in range(8)] * 2
    _send_all_at_once([live_server.url], sends, workers=6)
    _assert_each_pair_counted_once(engine)


def test_label_batches_of_one_model_from_replicas_of_either_setting_pair_each_once(
        live_server, client, engine, settings):
    """Two replicas, one with labels locked by model and one striped (as during the rolling
    restart that sets `striped`), take many small label batches of one model at once, and
    prediction batches for the same ids: every pair is counted once."""
    from app.main import create_app
    from tests.conftest import LiveServer

    register(client)
    sends = [("/v1/predictions", [prediction(i) for i in range(k, k + 25)])
             for k in range(0, IN_FLIGHT, 25)]
    sends += [("/v1/labels", [label(i, value=_value(i)) for i in range(k, IN_FLIGHT, 16)])
              for k in range(16)] * 2
    other = create_app(settings.model_copy(update={"pairing_locks": "striped",
                                                   "scheduler_enabled": False}))
    try:
        with LiveServer(other) as striped:
            _send_all_at_once([live_server.url, striped.url], sends, workers=8)
    finally:
        other.state.engine.dispose()
    _assert_each_pair_counted_once(engine)


IN_FLIGHT = 400


def _value(i: int) -> str:
    return "fraud" if i % 3 == 0 else "legit"  # score 0.25: legit


def _send_all_at_once(urls: list[str], sends: list[tuple[str, list]], workers: int) -> None:
    """Every batch at once, in a shuffled order, to the servers in turn; each label batch's
    answer must account for its labels."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    import httpx2

    random.Random(7).shuffle(sends)

    def send(job: tuple[int, tuple[str, list]]) -> tuple[str, dict]:
        i, (path, records) = job
        with httpx2.Client(base_url=urls[i % len(urls)], timeout=60) as c:
            r = c.post(path, json={"records": records})
            assert r.status_code == 200, r.text
            return path, r.json()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = [a for path, a in pool.map(send, enumerate(sends)) if path == "/v1/labels"]
    assert sum(a["matched"] + a["pending"] for a in answers) == IN_FLIGHT
    assert sum(a["duplicates"] for a in answers) == IN_FLIGHT


def _assert_each_pair_counted_once(engine) -> None:
    from sqlalchemy import select

    from app.evaluation.packing import unpack_outcome
    from app.storage.summaries import OUTCOME
    from app.storage.tables import bucket_summaries, pending_labels, slo_counters

    n = IN_FLIGHT
    assert stored(engine)["labels"] == n
    with engine.connect() as conn:
        labeled, errors = conn.execute(select(slo_counters.c.labeled,
                                              slo_counters.c.errors)).one()
        waiting = conn.execute(select(pending_labels.c.n)).scalars().all()
        outcomes = [unpack_outcome(p) for p in conn.execute(
            select(bucket_summaries.c.payload)
            .where(bucket_summaries.c.kind == OUTCOME)).scalars()]
    wrong = sum(1 for i in range(n) if _value(i) == "fraud")
    assert (labeled, errors) == (n, wrong)
    assert set(waiting) <= {0}
    assert sum(o.labeled for o in outcomes) == n
    assert sum(o.errors for o in outcomes) == wrong
    assert sum(o.n for o in outcomes) == n  # every prediction counted once too


def test_labels_pair_whatever_characters_their_ids_hold(client, engine):
    """Ids with quotes, backslashes, percent signs, dollar-quote tags and non-ASCII text are
    stored and paired as they were sent."""
    ids = ["a'b", 'q"\\x', "$m0$", "$m0$$m1$", "%s 100%", "$$", "ü€😀", "tab\tnew\nline"]
    register(client)
    r = client.post("/v1/predictions", json={"records": [
        prediction(i, prediction_id=pid) for i, pid in enumerate(ids[:-1])]})
    assert r.json() == {"accepted": len(ids) - 1, "duplicates": 0}, r.text
    r = client.post("/v1/labels", json={"records": [
        label(i, prediction_id=pid, value=["fraud", "legit"][i % 2])
        for i, pid in enumerate(ids)]})
    assert r.json() == {"matched": len(ids) - 1, "pending": 1, "duplicates": 0}, r.text
    assert sorted((row.prediction_id, row.label_class) for row in stored_labels(engine)) == \
        sorted((pid, ["fraud", "legit"][i % 2]) for i, pid in enumerate(ids))
