"""POST /v1/summaries: summaries folded elsewhere by the service's own kernel give the same
reports as the raw predictions posted one by one; an upload counts once however often and in
whatever order it is sent; stale profiles, corrupt payloads and foreign models are refused with
the reason, and nothing of a refused upload is stored."""

from __future__ import annotations

import base64
import random
from datetime import timedelta

import numpy as np
import pytest

from app.evaluation.fold import arrow_from_records, fold, from_profile_document, upload_body
from app.evaluation.packing import pack
from tests.factories import NOW, binary_model, iso, register

BUCKET = 300


def window() -> tuple:
    end = NOW.replace(minute=0, second=0) - timedelta(hours=1)
    return end - timedelta(hours=1), end


def traffic(n: int, seed: int = 3) -> list[dict]:
    """Predictions of the last-but-one hour: half labeled, some inline and some later,
    a missing value, an unseen category, three regions."""
    rng = np.random.default_rng(seed)
    start, _ = window()
    out = []
    for i in range(n):
        ts = start + timedelta(seconds=float(rng.uniform(0, 3599)))
        score = float(np.round(rng.beta(2, 5), 4))
        rec = {"prediction_id": f"p-{i}", "timestamp": ts,
               "features": {"amount": None if i % 17 == 0 else float(np.round(
                   rng.normal(60, 20), 2)),
                   "country": ["DE", "FR", "PL", "XX"][i % 4]},
               "cohorts": {"region": ["eu", "us", "apac"][i % 3]},
               "prediction": {"score": score}}
        if i % 2 == 0:
            rec["label"] = "fraud" if rng.random() < score else "legit"
            rec["label_timestamp"] = ts if i % 4 == 0 else ts + timedelta(minutes=7)
        out.append(rec)
    return out


def post_raw(client, model: str, recs: list[dict]) -> None:
    preds, labels = [], []
    for r in recs:
        p = {"model": model, "version": "v1", "prediction_id": r["prediction_id"],
             "timestamp": iso(r["timestamp"]), "features": r["features"],
             "cohorts": r["cohorts"], "prediction": r["prediction"]}
        if "label" in r and r["label_timestamp"] == r["timestamp"]:
            p["label"] = r["label"]
        elif "label" in r:
            labels.append({"model": model, "prediction_id": r["prediction_id"],
                           "label": r["label"], "timestamp": iso(r["label_timestamp"])})
        preds.append(p)
    for i in range(0, len(preds), 500):
        assert client.post("/v1/predictions", json={"records": preds[i:i + 500]}
                           ).status_code == 200
    assert client.post("/v1/labels", json={"records": labels}).status_code == 200


def setup_model(client, name: str) -> None:
    register(client, binary_model(name))
    rng = np.random.default_rng(1)
    ref = [{"amount": float(np.round(rng.normal(50, 20), 2)),
            "country": ["DE", "FR", "PL"][i % 3], "score": (s := float(rng.beta(2, 5))),
            "label": "fraud" if rng.random() < s else "legit"}  # labeled: CBPE applies
           for i in range(800)]
    r = client.post(f"/v1/models/{name}/versions/v1/reference", json={"records": ref})
    assert r.status_code == 201, r.text


def folded(client, name: str, recs: list[dict]) -> tuple[dict, list]:
    """The records folded as a producer elsewhere would: the version's profile fetched from
    the service, the kernel run on an Arrow batch."""
    doc = client.get(f"/v1/models/{name}/versions/v1/profile").json()
    shape, cp = from_profile_document(doc)
    return doc, fold(shape, arrow_from_records(shape, recs), 0, {0: cp}, doc["bucket_seconds"])


def upload(doc: dict, rows: list, *, source: str = "edge-1", sequence: int = 1) -> dict:
    return upload_body(doc, rows, source=source, sequence=sequence)


def reports(client, name: str) -> dict:
    start, end = window()
    out = {}
    for kind in ("drift", "calibration", "cohorts", "performance"):
        r = client.get(f"/v1/models/{name}/reports/{kind}",
                       params={"start": iso(start), "end": iso(end)})
        assert r.status_code == 200, r.text
        body = r.json()
        body.pop("model", None)
        out[kind] = body
    return out


def comparable(x: object) -> object:
    """A report with floats to 12 significant digits (sums added in another order differ in
    the last bits; every count and decision is compared exactly) and without the reference's
    upload time (each model has its own reference)."""
    if isinstance(x, dict):
        return {k: comparable(v) for k, v in x.items() if k != "created_at"}
    if isinstance(x, list):
        return [comparable(v) for v in x]
    if isinstance(x, float):
        return float(f"{x:.12g}")
    return x


def test_imported_summaries_report_exactly_what_raw_ingest_reports(client):
    recs = traffic(1200)
    setup_model(client, "raw")
    setup_model(client, "imp")
    post_raw(client, "raw", recs)
    doc, rows = folded(client, "imp", recs)
    assert {r.kind for r in rows} == {"outcome", "drift"} and len(rows) == 24
    body = upload(doc, rows)
    r = client.post("/v1/summaries", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 24, "duplicates": 0, "predictions": 1200}
    raw, imported = reports(client, "raw"), reports(client, "imp")
    assert imported["drift"]["versions"][0]["n"] == 1200
    assert comparable(imported) == comparable(raw)

    # sent again, and again in pieces in another order: nothing counts twice
    again = client.post("/v1/summaries", json=body)
    assert again.json() == {"accepted": 0, "duplicates": 24, "predictions": 0}
    pieces = body["summaries"][:]
    random.Random(0).shuffle(pieces)
    for i in range(0, 24, 5):
        r = client.post("/v1/summaries", json={**body, "summaries": pieces[i:i + 5]})
        assert r.status_code == 200 and r.json()["accepted"] == 0
    assert comparable(reports(client, "imp")) == comparable(raw)


def test_a_stale_profile_is_409_naming_the_current_one_and_nothing_is_stored(client):
    setup_model(client, "imp")
    doc, rows = folded(client, "imp", traffic(200))
    body = upload(doc, rows)
    r = client.post("/v1/summaries", json={**body, "profile": "0123456789abcdef"})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "stale_profile"
    assert doc["profile_key"] in r.json()["message"]
    # outcome summaries alone do not depend on the profile
    outcome = [s for s in body["summaries"] if s["kind"] == "outcome"]
    r = client.post("/v1/summaries", json={**body, "profile": None, "summaries": outcome})
    assert r.status_code == 200 and r.json()["accepted"] == 12


def corrupt(summary: dict, payload: bytes) -> dict:
    return {**summary, "payload": base64.b64encode(payload).decode()}


@pytest.mark.parametrize("case", ["not_base64", "garbage", "zip_bomb", "wrong_n",
                                  "wrong_layout", "double_count", "object_dtype",
                                  "unaligned", "foreign_cohort", "cohort_positives"])
def test_a_corrupt_or_mismatched_summary_is_422_naming_it_and_nothing_is_stored(client,
                                                                                case):
    import zlib

    setup_model(client, "imp")
    doc, rows = folded(client, "imp", traffic(300))
    body = upload(doc, rows)
    s = body["summaries"]
    drift = next(i for i, x in enumerate(s) if x["kind"] == "drift")
    outcome = next(i for i, x in enumerate(s) if x["kind"] == "outcome")
    bad = drift
    if case == "not_base64":
        s[drift] = {**s[drift], "payload": "%%%"}
    elif case == "garbage":
        s[drift] = corrupt(s[drift], b"Z" + b"\x00" * 40)
    elif case == "zip_bomb":  # a 32 kB payload inflating to 64 MB
        s[drift] = corrupt(s[drift], b"Z" + zlib.compress(b"\x00" * 64 * 2**20, 9))
    elif case == "wrong_n":
        s[drift] = {**s[drift], "n": s[drift]["n"] + 1}
    elif case == "wrong_layout":
        s[drift] = corrupt(s[drift], pack({"n": s[drift]["n"], "size": 10},
                                          {"dense": np.zeros(10, np.uint8)}))
    elif case == "double_count":  # every slot doubled: each column counts 2n
        from app.evaluation.packing import pack_drift, unpack_drift

        d = unpack_drift(base64.b64decode(s[drift]["payload"]), "k")
        d.counts *= 2
        s[drift] = corrupt(s[drift], pack_drift(d))
    elif case == "object_dtype":
        s[drift] = corrupt(s[drift], b"R" + len(h := b'{"v":1,"meta":{"n":1,"size":1},'
                                                  b'"arrays":[["dense","|O",[1]]]}'
                                                  ).to_bytes(4, "little") + h + b"\x00" * 8)
    elif case == "unaligned":
        s[drift] = {**s[drift], "bucket_start": iso(NOW.replace(second=17) - timedelta(
            hours=1))}
    elif case == "foreign_cohort":
        from app.evaluation.packing import pack_outcome, unpack_outcome

        o = unpack_outcome(base64.b64decode(s[outcome]["payload"]))
        o.cohorts["planet"] = o.cohorts.pop("region")
        s[outcome] = corrupt(s[outcome], pack_outcome(o))
        bad = outcome
    elif case == "cohort_positives":  # more positives than the cohort has labeled pairs
        from dataclasses import replace

        from app.evaluation.packing import pack_outcome, unpack_outcome

        o = unpack_outcome(base64.b64decode(s[outcome]["payload"]))
        c = o.cohorts["region"]
        assert c.positives is not None
        o.cohorts["region"] = replace(c, positives=c.n + 1.0)
        s[outcome] = corrupt(s[outcome], pack_outcome(o))
        bad = outcome
    r = client.post("/v1/summaries", json=body)
    assert r.status_code == 422, r.text
    assert [(d.get("field"), d.get("index")) for d in r.json()["details"]] == [
        ("summaries", bad)], r.json()
    assert reports(client, "imp")["drift"]["versions"] == []


def test_limited_tokens_and_unknown_models(client):
    setup_model(client, "imp")
    doc, rows = folded(client, "imp", traffic(50))
    r = client.post("/v1/summaries", json={**upload(doc, rows), "model": "ghost"})
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"
    r = client.post("/v1/summaries", json={**upload(doc, rows), "bucket_seconds": 60})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "bucket_seconds"
    assert client.get("/v1/models/imp/versions/v9/profile").status_code == 404
