"""Embedding features end to end: the schema's `dim` bounded with a clear 422; a reference as
JSON lists or a Parquet list<float> column (a CSV refused, saying what to send) fits the
basis; a batch with a vector of the wrong length, a non-number or a non-finite number is
refused whole with a 422 naming the record and the feature; predictions whose vectors moved
0.5 sd are folded at ingest, the drift job stores the decision, the drift report and the
version page state it, and /metrics exports it per feature."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import cli
from app.jobs import runner
from app.settings import Settings
from tests.api.test_metrics import scrape
from tests.factories import iso
from tests.jobs_data import latest_window, post_all

DIM = 8
MODEL = {"name": "search", "task": "binary_classification",
         "features": [{"name": "a", "type": "numeric"},
                      {"name": "vec", "type": "embedding", "dim": DIM}],
         "cohort_keys": [], "classes": ["no", "yes"]}
MIX = np.random.default_rng(3).normal(size=(DIM, DIM))


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, job_catchup_windows=1, metrics_cache_seconds=0)


def vectors(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    z = rng.normal(size=(n, DIM)) * np.linspace(1, 0.3, DIM)
    z[:, 0] += shift
    return z @ MIX


def register(client, name: str = "search") -> None:
    assert client.post("/v1/models", json={**MODEL, "name": name}).status_code == 201
    assert client.post(f"/v1/models/{name}/versions", json={"version": "v1"}).status_code == 201


@pytest.mark.parametrize("spec, message", [
    ({"name": "e", "type": "embedding"}, "needs dim"),
    ({"name": "e", "type": "embedding", "dim": 1}, "from 2 to 1024"),
    ({"name": "e", "type": "embedding", "dim": 1025}, "from 2 to 1024"),
    ({"name": "e", "type": "embedding", "dim": 8.5}, "dim"),
    ({"name": "e", "type": "numeric", "dim": 8}, "embedding features only"),
])
def test_dim_is_bounded(client, spec, message):
    r = client.post("/v1/models", json={**MODEL, "features": [spec]})
    assert r.status_code == 422 and message in r.text, r.text


def test_a_numeric_feature_reads_back_without_dim(client):
    register(client)
    assert client.get("/v1/models/search").json()["features"] == MODEL["features"]


def test_bad_vectors_are_refused_whole_naming_record_and_feature(client):
    register(client)
    start, _ = latest_window()
    good = [0.5] * DIM

    def rec(i: int, vec) -> dict:
        return {"model": "search", "version": "v1", "prediction_id": f"p-{i}",
                "timestamp": iso(start + timedelta(minutes=1)),
                "features": {"a": 1.0, "vec": vec}, "prediction": {"score": 0.3}}

    body = {"records": [rec(0, good), rec(1, good[:-1]), rec(2, [*good[:-1], "x"]),
                        rec(3, "text"), rec(4, None)]}
    r = client.post("/v1/predictions", json=body)
    assert r.status_code == 422, r.text
    details = {(d["index"], d["field"]): d["problem"] for d in r.json()["details"]}
    assert set(details) == {(1, "features.vec"), (2, "features.vec"), (3, "features.vec")}
    assert "8 numbers, got 7" in details[(1, "features.vec")]
    assert "element 7" in details[(2, "features.vec")]
    raw = ('{"records": [' + ",".join(
        f'{{"model": "search", "version": "v1", "prediction_id": "n-{i}", "timestamp": '
        f'"{iso(start)}", "features": {{"vec": [{", ".join(["1"] * (DIM - 1))}, {v}]}}, '
        '"prediction": {"score": 0.3}}' for i, v in enumerate(("NaN", "1e999"))) + "]}")
    r = client.post("/v1/predictions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.text, r.text
    assert client.get("/v1/models/search/versions/v1").status_code == 200
    r = client.post("/v1/predictions", json={"records": [rec(0, good), rec(4, None)]})
    assert r.status_code in (200, 201), r.text  # nothing of the refused batches was stored


def test_reference_formats(client):
    register(client)
    rng = np.random.default_rng(1)
    x = vectors(rng, 400)
    r = client.post("/v1/models/search/versions/v1/reference",
                    content=b"a,vec,score\n1,2,0.5\n", headers={"content-type": "text/csv"})
    assert r.status_code == 422 and "JSON records" in r.text and "Parquet" in r.text, r.text
    bad = [{"vec": [1.0] * (DIM - 1), "score": 0.5}]
    r = client.post("/v1/models/search/versions/v1/reference", json={"records": bad})
    assert r.status_code == 422 and "records[0]" in r.text, r.text
    for t in (pa.list_(pa.float32()), pa.list_(pa.float64(), DIM)):
        table = pa.table({"a": rng.normal(size=400), "score": rng.uniform(size=400),
                          "vec": pa.array([list(v) for v in x], t)})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        r = client.post("/v1/models/search/versions/v1/reference?replace=true",
                        content=sink.getvalue(),
                        headers={"content-type": "application/vnd.apache.parquet"})
        assert r.status_code in (200, 201), r.text
    table = pa.table({"vec": pa.array([[1.0, 2.0]] * 3)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    r = client.post("/v1/models/search/versions/v1/reference?replace=true",
                    content=sink.getvalue(),
                    headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 422 and "another length than 8" in r.text, r.text


def post_shifted(client, rng: np.random.Generator) -> tuple:
    """1,500 predictions whose vectors moved 0.5 sd, spread over the latest window, one in
    ten without a vector; the window's (start, end)."""
    start, end = latest_window()
    x = vectors(rng, 1500, shift=0.5)
    offsets = np.sort(rng.uniform(0, (end - start).total_seconds() - 1, size=1500))
    post_all(client, "/v1/predictions", [
        {"model": "search", "version": "v1", "prediction_id": f"p-{i}",
         "timestamp": iso(start + timedelta(seconds=float(offsets[i]))),
         "features": {"a": float(rng.normal()), "vec": None if i % 10 == 0 else x[i].tolist()},
         "prediction": {"score": 0.3}} for i in range(1500)])
    return start, end


def test_a_shift_is_stored_reported_exported_and_shown(client, engine, settings, capsys):
    rng = np.random.default_rng(11)
    register(client)
    ref = vectors(rng, 3000)
    r = client.post("/v1/models/search/versions/v1/reference", json={"records": [
        {"a": float(rng.normal()), "vec": v.tolist(), "score": 0.3} for v in ref]})
    assert r.status_code in (200, 201), r.text
    start, end = post_shifted(client, rng)
    assert runner.tick(engine, settings, now=end).get("success")

    report = client.get("/v1/models/search/reports/drift",
                        params={"start": start.isoformat(), "end": end.isoformat()}).json()
    (v,) = report["versions"]
    (e,) = v["embeddings"]["features"]
    assert e["feature"] == "vec" and e["decision"] == "critical" and e["n"] == 1350, e
    assert 0.35 < e["effect"] < 0.65 and e["pvalue"] < 1e-10
    assert [f["feature"] for f in v["features"]] == ["a"]
    history = client.get("/v1/models/search/history",
                         params={"metric": "embedding_shift", "feature": "vec"}).json()
    assert history["points"][-1]["value"] == pytest.approx(e["effect"])
    s = scrape(client)
    labels = (("feature", "vec"), ("model", "search"), ("version", "v1"))
    assert s[("modelmon_embedding_shift_effect", labels)] == pytest.approx(e["effect"])
    page = client.get("/ui/models/search/versions/v1",
                      params={"end": end.isoformat()}).text
    assert 'id="embeddings"' in page and 'data-feature="vec" data-decision="critical"' in page
    assert "runbooks.md#modelmonembeddingdrifthigh" in page
    # the CLI's drift report prints the same figures as one line
    assert cli.main(["report", "drift", "--model", "search", "--start", start.isoformat(),
                     "--end", end.isoformat(), "--database-url", settings.database_url]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("embedding")]
    assert line == (f"embedding vec (dim {DIM}, {e['components']} directions): effect "
                    f"{e['effect']:.4g} sd, p {e['pvalue']:.4g}, n 1350: critical")
