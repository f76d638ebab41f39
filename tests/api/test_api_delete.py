"""DELETE of models and versions over HTTP, on both stores: refused (409, naming the tables)
while production data is stored unless ?force=true, then everything of the model or version
goes and nothing of the others; admin scope, audited."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from app.jobs import runner
from app.settings import Settings
from app.storage import tables as t
from tests.api.test_api_auth import bearer, operator_and_viewer
from tests.jobs_data import drift_model, latest_window, post_all, reference_csv, traffic

# every table that holds rows of a model, and the column naming it
PER_MODEL = [t.models, t.model_versions, t.prediction_keys, t.predictions, t.labels,
             t.reference_profiles, t.weight_stats, t.feature_weights, t.version_deltas,
             t.metric_results, t.job_runs, t.slo_counters, t.bucket_summaries,
             t.maintenance_windows]
WEIGHTS = {"tensors": [{"name": "w", "shape": [4], "count": 4, "zeros": 1, "l1": 2.0,
                        "l2": 1.2, "max_abs": 0.9, "mean": 0.1, "std": 0.4}]}


def rows(engine, model_id: int, version_id: int | None = None,
         version: str = "") -> dict[str, int]:
    """Rows per table of a model (or of one version: by its id, or for the tables keyed by
    prediction id, by the ids seeded() gives its predictions)."""
    out = {}
    with engine.connect() as conn:
        for table in PER_MODEL:
            col = table.c.id if table is t.models else table.c.model_id
            q = select(func.count()).select_from(table).where(col == model_id)
            if version_id is not None:
                if table in (t.labels, t.prediction_keys):
                    q = q.where(table.c.prediction_id.like(f"{version}-%"))
                else:
                    vcol = (table.c.id if table is t.model_versions else
                            table.c.base_version_id if table is t.version_deltas else
                            table.c.get("version_id"))
                    if vcol is None:
                        continue
                    q = q.where(vcol == version_id)
            out[table.name] = int(conn.execute(q).scalar_one())
    return out


def ids(engine, model: str) -> tuple[int, dict[str, int]]:
    with engine.connect() as conn:
        m = conn.execute(select(t.models.c.id).where(t.models.c.name == model)).scalar_one()
        vs = dict(conn.execute(select(t.model_versions.c.version, t.model_versions.c.id)
                               .where(t.model_versions.c.model_id == m)).all())
    return m, vs


def seeded(client, engine, settings, name: str) -> None:
    """A model with two versions, each with a reference, weights, labeled predictions,
    summaries and drift results, a maintenance window and a weight delta."""
    rng = np.random.default_rng(1)
    start, end = latest_window()
    assert client.post("/v1/models", json=drift_model(name)).status_code == 201
    for v in ("v1", "v2"):
        assert client.post(f"/v1/models/{name}/versions", json={"version": v}
                           ).status_code == 201
        r = client.post(f"/v1/models/{name}/versions/{v}/reference",
                        content=reference_csv(rng, 300), headers={"content-type": "text/csv"})
        assert r.status_code == 201, r.text
        r = client.post(f"/v1/models/{name}/versions/{v}/weights", json=WEIGHTS)
        assert r.status_code == 201, r.text
        records, _, y, _ = traffic(rng, 200, start, end, version=v, model=name, prefix=v)
        for rec, yi in zip(records, y, strict=True):
            rec["label"] = "bad" if yi else "good"
        post_all(client, "/v1/predictions", records)
    r = client.post(f"/v1/models/{name}/maintenance", json={
        "start": start.isoformat(), "end": end.isoformat(), "reason": "retrain"})
    assert r.status_code == 201, r.text
    assert runner.tick(engine, settings, now=end, jobs=["drift"]).get("success")


def test_delete_version_is_refused_while_it_has_data_then_forced(client, engine, settings):
    seeded(client, engine, settings, "credit")
    seeded(client, engine, settings, "other")
    m, vs = ids(engine, "credit")
    other = ids(engine, "other")[0]
    before_v1, before_other = rows(engine, m, vs["v1"], "v1"), rows(engine, other)
    for table in ("predictions", "labels", "bucket_summaries", "metric_results",
                  "reference_profiles", "weight_stats"):
        assert before_v1[table] > 0, table

    r = client.delete("/v1/models/credit/versions/v2")
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "has_data" and "force=true" in r.json()["message"]
    assert {d["problem"] for d in r.json()["details"]} == {
        f"rows are stored in {x}"
        for x in ("predictions", "labels", "bucket_summaries", "metric_results")}
    assert rows(engine, m, vs["v2"], "v2")["predictions"] == 200  # nothing deleted

    r = client.delete("/v1/models/credit/versions/v2", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["predictions"] == 200
    assert r.json()["deleted"]["model_versions"] == 1
    assert set(rows(engine, m, vs["v2"], "v2").values()) == {0}
    # v1 and the other model are untouched (the v1-v2 delta went with v2)
    assert before_v1["version_deltas"] == 1  # v1 -> v2
    assert rows(engine, m, vs["v1"], "v1") == {**before_v1, "version_deltas": 0}
    assert rows(engine, other) == before_other
    assert [v["version"] for v in client.get("/v1/models/credit/versions").json()] == ["v1"]
    # its ids may be sent again, to another version; the deleted version is unknown
    again, *_ = traffic(np.random.default_rng(9), 3, *latest_window(), version="v2",
                        model="credit", prefix="v2")
    r = client.post("/v1/predictions", json={"records": again})
    assert r.status_code == 404 and r.json()["details"][0]["field"] == "version"
    for rec in again:
        rec["version"] = "v1"
    r = client.post("/v1/predictions", json={"records": again})
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    assert client.delete("/v1/models/credit/versions/v2").status_code == 404


def test_a_version_without_data_is_deleted_with_its_reference_and_weights(client, engine):
    assert client.post("/v1/models", json=drift_model("credit")).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    r = client.post("/v1/models/credit/versions/v1/reference",
                    content=reference_csv(np.random.default_rng(2), 300),
                    headers={"content-type": "text/csv"})
    assert r.status_code == 201
    assert client.post("/v1/models/credit/versions/v1/weights", json=WEIGHTS).status_code == 201
    m, vs = ids(engine, "credit")
    r = client.delete("/v1/models/credit/versions/v1")
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["reference_profiles"] == 1
    assert set(rows(engine, m, vs["v1"], "v1").values()) == {0}
    assert client.get("/v1/models/credit").json()["versions"] == 0
    # the name can be registered again, as a new version
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201


def test_delete_model_is_refused_while_it_has_data_then_forced(client, engine, settings):
    seeded(client, engine, settings, "credit")
    seeded(client, engine, settings, "other")
    m, _ = ids(engine, "credit")
    other = ids(engine, "other")[0]
    before_other = rows(engine, other)
    r = client.delete("/v1/models/credit")
    assert r.status_code == 409 and r.json()["code"] == "has_data"
    assert rows(engine, m)["predictions"] == 400
    r = client.delete("/v1/models/credit", params={"force": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["models"] == 1
    assert set(rows(engine, m).values()) == {0}
    assert rows(engine, other) == before_other
    assert client.get("/v1/models/credit").status_code == 404
    assert [x["name"] for x in client.get("/v1/models").json()] == ["other"]
    # predictions naming it are an unknown model at once in this process
    rec, *_ = traffic(np.random.default_rng(3), 1, *latest_window(), model="credit")
    r = client.post("/v1/predictions", json={"records": rec})
    assert r.status_code == 404 and r.json()["details"][0]["field"] == "model"
    assert client.delete("/v1/models/credit").status_code == 404
    # the name is free for a new registration, starting empty
    assert client.post("/v1/models", json=drift_model("credit")).status_code == 201
    assert client.get("/v1/models/credit").json()["versions"] == 0


def test_a_model_without_data_is_deleted_without_force(client):
    assert client.post("/v1/models", json=drift_model("credit")).status_code == 201
    assert client.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
    r = client.delete("/v1/models/credit", params={"force": "maybe"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "force", r.text
    r = client.delete("/v1/models/credit")
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["model_versions"] == 1
    assert client.get("/v1/models/credit").status_code == 404


class TestWithTokens:
    @pytest.fixture
    def settings(self, db_url: str) -> Settings:
        return Settings(database_url=db_url, auth="on", token_cache_seconds=0)

    def test_deletes_need_admin_and_are_audited(self, client, engine):
        admin, read = operator_and_viewer(client, engine, drift_model("credit"))
        assert client.post("/v1/models/credit/versions", json={"version": "v1"},
                           headers=bearer(admin)).status_code == 201
        for path in ("/v1/models/credit/versions/v1", "/v1/models/credit"):
            r = client.delete(path, headers=bearer(read))
            assert r.status_code == 403 and r.json()["code"] == "forbidden"
        for path in ("/v1/models/credit/versions/v1", "/v1/models/credit"):
            assert client.delete(path, headers=bearer(admin)).status_code == 200
        with engine.connect() as conn:
            got = [(r.action, r.token_name, r.status) for r in conn.execute(
                select(t.audit_log).where(t.audit_log.c.action.like("%.delete"))
                .order_by(t.audit_log.c.id))]
        assert got == [("version.delete", "viewer", 403), ("model.delete", "viewer", 403),
                       ("version.delete", "operator", 200), ("model.delete", "operator", 200)]
