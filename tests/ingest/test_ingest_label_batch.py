"""One large label batch of every kind of label at once (stored already, pairing with a stored
prediction, waiting for its prediction, sent twice in the batch): every label stored once,
each pair counted once in the outcome summaries and the SLO counters, against counts made by
hand here, with one summary row per bucket the batch's pairs fall in."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from app.evaluation.packing import unpack_outcome
from app.storage.tables import bucket_summaries, pending_labels, slo_counters
from tests.factories import label, prediction, register
from tests.helpers import stored

N_PRED, PRE_LABELED = 900, 100


def _score(i: int) -> float:
    return round(((i * 37) % 100) / 100 + 0.005, 3)


def _label(i: int) -> str:
    return "fraud" if (i * 11) % 7 < 3 else "legit"


def _outcome_rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(bucket_summaries.c.created_at, bucket_summaries.c.payload,
                                   bucket_summaries.c.bucket_start)
                            .where(bucket_summaries.c.kind == "outcome")).all()


def test_a_large_mixed_batch_counts_each_pair_once(client, engine):
    register(client)
    preds = [prediction(i, prediction={"score": _score(i)},
                        cohorts={"region": "eu" if i % 3 else "us"}) for i in range(N_PRED)]
    for start in range(0, N_PRED, 300):
        assert client.post("/v1/predictions",
                           json={"records": preds[start:start + 300]}).status_code == 200
    early = client.post("/v1/labels", json={
        "records": [label(i, value=_label(i)) for i in range(PRE_LABELED)]})
    assert early.json() == {"matched": PRE_LABELED, "pending": 0, "duplicates": 0}
    before = len(_outcome_rows(engine))

    # 0-99 stored already, 100-899 pair with their predictions, 900-999 wait for theirs;
    # 40 labels sent twice in the batch
    sent = [label(i, value=_label(i)) for i in range(1000)]
    sent += [label(i, value=_label(i)) for i in range(300, 340)]
    r = client.post("/v1/labels", json={"records": sent})
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 800, "pending": 100, "duplicates": 140}
    assert stored(engine)["labels"] == 1000

    # the hand count: the binary rule is score >= 0.5 -> "fraud"
    labeled = range(N_PRED)
    wrong = sum((_score(i) >= 0.5) != (_label(i) == "fraud") for i in labeled)
    with engine.connect() as conn:
        slo = conn.execute(select(slo_counters.c.labeled, slo_counters.c.errors)).one()
        waiting = conn.execute(select(pending_labels.c.n)).scalar_one()
    assert (slo.labeled, slo.errors) == (N_PRED, wrong)
    assert waiting == 100

    rows = _outcome_rows(engine)
    newest = max(row.created_at for row in rows)
    batch = [row.bucket_start for row in rows if row.created_at == newest]
    # one row per bucket the batch's pairs fall in
    assert len(batch) == len(set(batch)) == len(rows) - before > 1
    total = unpack_outcome(rows[0].payload)
    for _, payload, _ in rows[1:]:
        total.add(unpack_outcome(payload))
    assert total.n == N_PRED and total.labeled == N_PRED
    assert total.errors == wrong
    assert total.calibration.count.sum() == N_PRED
    # predicted class (rows) by label (columns), classes in the model's order
    classes = ["legit", "fraud"]
    confusion = np.zeros((2, 2), np.int64)
    for i in labeled:
        confusion[int(_score(i) >= 0.5), classes.index(_label(i))] += 1
    assert np.array_equal(total.confusion, confusion)
    region = total.cohorts["region"]
    assert {c: n for c, n in zip(region.cohorts, region.n.tolist(), strict=True) if n} == {
        "eu": sum(1 for i in labeled if i % 3), "us": sum(1 for i in labeled if i % 3 == 0)}
