"""The four ways in give one answer. One generated prediction log (two versions; labels inline,
late, corrected later and for predictions that do not exist; missing values, a category the
reference never saw, three regions as cohorts) goes through raw ingest (POST /v1/predictions
and /v1/labels), `modelmon backfill` over the log written as hive-partitioned Parquet, the
Spark adapter in ``local[2]`` over the same Parquet (in both its modes: the DataFrame's
``mapInArrow`` and the file mode), and the summarizing client on a model server, each into
a model of its own with the same reference and training figures. After
compaction every bucket's summaries decode to the same counts and sums (compared decoded: a
payload lists cohort values in the order its path met them, so the bytes differ), and the
drift, calibration, cohort and performance reports (with the generalization gap and the
realized metrics beside the estimates), their decisions and the jobs' stored results are
the same, for a binary, a multiclass and a regression model. The one
exception is documented: the label-delay quantiles come from a KLL sketch, which past 200
labels depends on the order it was merged in; they are checked against the true delays within
the sketch's rank error.

Exactly once: every upload the summarizing paths made is sent again, twice and in
shuffled order (its summaries shuffled too), to a twin model of each path: the twins equal one
clean pass. (The backfill killed with SIGKILL and resumed is proven in
tests/cli/test_backfill_cli.py, the summarizing client killed and restarted on its spool in
tests/client/test_client_summaries.py; a single upload sent twice and in pieces in
tests/api/test_summaries_api.py.)

The client runs in both its modes. By default ("edge") it sends summaries without the labels,
thin outcome rows and every label as it comes, and the service pairs them (the twin gets the
thin rows and labels too, each batch twice, the thin rows shuffled). With ``thin_rows=False``
("edge-paired") only summaries leave and the client pairs a late label only with a
prediction it still holds: every late label of this log comes within its pairing horizon
(``label_horizon``, a day), and a correction or a label for an unknown prediction is not
sent, as the service keeps the first label and ignores the others.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from modelmon_client.summarizing import SummarizingMonitor
from sqlalchemy import select

from app import cli
from app.evaluation.fold import merge
from app.evaluation.summaries import KLL_K, KLL_RANK_ERROR
from app.evaluation.windows import compact
from app.jobs import runner
from app.storage import registry
from app.storage.db import as_utc
from app.storage.summaries import OUTCOME, SummaryRow
from app.storage.tables import bucket_summaries, metric_results, model_versions, models
from tests.api.test_summaries_api import comparable, reports, window
from tests.cli.test_backfill_cli import (
    MODELS,
    VERSIONS,
    backfill_args,
    post_raw,
    write_lake,
)
from tests.cli.test_backfill_cli import log as base_log
from tests.cli.test_backfill_cli import reference as base_reference
from tests.conftest import LiveServer
from tests.evaluation.test_evaluation_fold import contents
from tests.factories import version

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")

PATHS = ("raw", "lake", "spark", "spark-files", "edge", "edge-paired")
SUMMARIZING = PATHS[1:]
TASKS = ("binary", "multiclass", "regression")
N = 900
# the label-delay quantiles the labels job stores, from a KLL sketch: the one approximate
# summary (docs/jobs.md), whose result depends on the order it was merged in past KLL_K labels
SKETCHED = {"label_delay_p50_seconds": 0.5, "label_delay_p90_seconds": 0.9}
# the metrics of each task the jobs must have decided, beside the drift and gap ones
DECIDED = {"binary": ("calibration_ece", "cohort_error_ratio", "feature_new_category_ratio"),
           "multiclass": ("calibration_ece", "cohort_error_ratio"),
           "regression": ("error_mae", "cohort_mae")}


RECORDED = ("/v1/summaries", "/v1/predictions", "/v1/labels")
# Beside the backfill test's features: a second numeric feature correlated with the first (so
# the multivariate PCA sums are folded by every path) and an embedding (its whitened sums).
MORE = [{"name": "twin", "type": "numeric"}, {"name": "vec", "type": "embedding", "dim": 4}]
FIRST = {"binary": "amount", "multiclass": "petal", "regression": "amount"}
# the lake's own column names, as the Spark adapter's two modes are told them
LAKE_MAPPING = {"columns": {"timestamp": "event_time", "region": "geo"},
                "label_columns": {"prediction_id": "pid", "label": "outcome",
                                  "timestamp": "labeled_at"}}


def with_more(task: str, features: dict, i: int, seed: int) -> dict:
    """``features`` with ``twin`` (0.8 of the first numeric feature plus noise; missing on
    its own schedule) and ``vec`` (four numbers moving with it; null for every 19th row)."""
    rng = np.random.default_rng([seed, i])
    x = features.get(FIRST[task])
    base = 50.0 if x is None else x
    twin = None if i % 23 == 0 else float(np.round(0.8 * base + rng.normal(0, 8), 2))
    vec = None if i % 19 == 0 else [float(np.round(v, 4)) for v in
                                    (base / 20 + rng.normal(0, 1, 4)) * [1, -1, 0.5, 2]]
    return {**features, "twin": twin, "vec": vec}


def log(task: str, n: int, seed: int) -> tuple[list[dict], list[dict]]:
    preds, labels = base_log(task, n, seed=seed)
    return [{**r, "features": with_more(task, r["features"], i, seed)}
            for i, r in enumerate(preds)], labels


def reference(task: str, i: int) -> dict:
    r = base_reference(task, i)
    return {**r, **with_more(task, {k: v for k, v in r.items() if k == FIRST[task]}, i, 99)}


class Recorder:
    """The app, with every body POSTed to /v1/summaries, /v1/predictions and /v1/labels kept
    (as JSON, with its path) on its way in."""

    def __init__(self, app) -> None:
        self.app = app
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in RECORDED:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        gzipped = (b"content-encoding", b"gzip") in [(k.lower(), v.lower())
                                                      for k, v in scope["headers"]]
        self.bodies.append({**json.loads(gzip.decompress(body) if gzipped else body),
                            "_path": scope["path"]})
        given = False

        async def again():
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, again, send)


def training(task: str) -> dict:
    """Validation figures for the generalization gap, overall and for two regions."""
    error = 4.0 if task == "regression" else 0.3
    return {"validation_error": error, "cohort_validation_error": {
        "region=eu": error * 0.8, "region=us": error * 1.1}}


def setup(client, task: str, name: str) -> None:
    model = MODELS[task](name)
    model["features"] = [*model.get("features", []), *MORE]
    assert client.post("/v1/models", json=model).status_code == 201, model
    for i, v in enumerate(VERSIONS):
        meta = {**version(v)["metadata"], "training": training(task)}
        r = client.post(f"/v1/models/{name}/versions", json=version(v, metadata=meta))
        assert r.status_code == 201, r.text
        r = client.post(f"/v1/models/{name}/versions/{v}/reference", json={
            "records": [reference(task, k + i * 7) for k in range(600)]})
        assert r.status_code == 201, r.text


def through_spark(spark, url: str, name: str, data: str) -> dict[str, int]:
    """Spark reads the backfill's Parquet (its partitions, its column names) and summarises
    one version per job."""
    from pyspark.sql import functions as F

    from app.spark.job import summarize

    predictions = spark.read.parquet(data)
    labels = spark.read.parquet(str(Path(data).parent / "labels"))
    counted = {}
    for v in VERSIONS:
        done = summarize(predictions.where(F.col("version") == v), labels, url=url,
                         model=name, version=v, source="spark:four-paths", **LAKE_MAPPING)
        assert done.duplicates == 0
        counted[v] = done.predictions
    return counted


def through_spark_files(spark, url: str, name: str, data: str) -> dict[str, int]:
    """Spark's file mode over the same Parquet: one version per job, chosen by a filter on
    its hive partition (the other version's files are not read)."""
    import pyarrow.compute as pc

    from app.spark.files import summarize_parquet

    counted = {}
    for v in VERSIONS:
        done = summarize_parquet(spark, data, str(Path(data).parent / "labels"), url=url,
                                 model=name, version=v, source="spark-files:four-paths",
                                 filter=pc.field("version") == v, **LAKE_MAPPING)
        assert done.duplicates == 0
        counted[v] = done.predictions
    return counted


def through_client(url: str, name: str, preds: list[dict], labels: list[dict],
                   spool: Path, thin_rows: bool) -> dict[str, SummarizingMonitor]:
    """A model server per version: each prediction logged when it is made, each label when
    it comes, in time order; flushed half-way and at the end."""
    monitors = {v: SummarizingMonitor(url, model=name, version=v, spool_dir=spool / v,
                                      flush_interval=3600, source=f"{name}-{v}",
                                      thin_rows=thin_rows)
                for v in VERSIONS}
    of = {r["prediction_id"]: r["version"] for r in preds}
    events = sorted([(r["timestamp"], 0, i) for i, r in enumerate(preds)]
                    + [(x["timestamp"], 1, i) for i, x in enumerate(labels)])
    for k, (ts, kind, i) in enumerate(events):
        if kind == 0:
            r = preds[i]
            monitors[r["version"]].log(features=r["features"], prediction=r["prediction"],
                                       prediction_id=r["prediction_id"],
                                       cohorts=r["cohorts"], label=r.get("label"),
                                       timestamp=ts)
        else:
            x = labels[i]
            monitors[of.get(x["prediction_id"], VERSIONS[0])].label(
                x["prediction_id"], x["label"], timestamp=ts)
        if k == len(events) // 2:
            assert all(m.flush(60) for m in monitors.values())
    for m in monitors.values():
        assert m.flush(60)
        m.close()
    return monitors


def compacted(engine, settings, name: str) -> dict:
    """The model's bucket summaries once compacted, added up per version, bucket and kind and
    decoded (the profile key, which names each model's own reference, left out)."""
    _, end = window()
    compact(engine, before=end, max_cohort_values=settings.summary_max_cohort_values)
    b, mv = bucket_summaries, model_versions
    with engine.connect() as conn:
        rows = conn.execute(
            select(mv.c.version, b.c.bucket_start, b.c.kind, b.c.n, b.c.payload, b.c.origin)
            .join(mv, mv.c.id == b.c.version_id).join(models, models.c.id == b.c.model_id)
            .where(models.c.name == name)).all()
    # a client's bucket holds its imported summary and the service's sums of the pairs of
    # its thin rows: added up (exact), as every window adds them
    merged = merge([SummaryRow(r.version, as_utc(r.bucket_start), r.kind, "", int(r.n),
                               bytes(r.payload)) for r in rows])
    decoded = contents(merged)
    assert len(decoded) == len(merged)  # one row per version, bucket and kind
    return {key: by_cohort(value) if key[2] == OUTCOME else value
            for key, value in decoded.items()}


def by_cohort(outcome: tuple) -> tuple:
    """An outcome summary's cohort sums by cohort value: the values are held in the order
    they first came, which differs between paths (the sums do not)."""
    *head, cohorts, delays = outcome
    return (*head, {key: dict(zip(values, zip(*sums, strict=True), strict=True))
                    for key, (values, *sums) in cohorts.items()}, delays)


def differences(got: dict, expected: dict, name: str) -> str:
    """What differs between two paths' decoded summaries, bucket by bucket and field by
    field (a list by its differing positions)."""
    lines = [f"{name}: buckets only here {sorted(set(got) - set(expected))}, only in raw "
             f"{sorted(set(expected) - set(got))}"]
    for key in sorted(set(got) & set(expected)):
        if got[key] != expected[key]:
            lines.append(f"{key}: {_diff(got[key], expected[key])}")
    return "\n".join(lines[:6])


def _diff(a: object, b: object) -> str:
    if isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b):
        return "; ".join(f"[{i}] {_diff(x, y)}" for i, (x, y) in enumerate(zip(a, b,
                                                                               strict=True))
                         if x != y)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return "; ".join(f"{k}: {_diff(a[k], b[k])}" for k in a if a[k] != b[k])
    return f"{a!r} != raw {b!r}"


def job_results(engine, settings, name: str) -> list[tuple]:
    """Every window job run over the log's window; the results it stored, as comparable
    tuples (ids and times of computation left out)."""
    start, end = window()
    with engine.connect() as conn:
        model = next(m for m, _ in registry.list_models(conn=conn) if m.name == name)
    for job in runner.WINDOW_JOBS:
        assert runner.run_window(engine, job, model, start, end, settings) == "success"
    r, mv = metric_results, model_versions
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.c.job, mv.c.version, r.c.metric, r.c.subject, r.c.n, r.c.value,
                   r.c.decision, r.c.method, r.c.detail)
            .join(mv, mv.c.id == r.c.version_id).where(r.c.model_id == model.id)).all()
    return sorted((comparable(list(row)) for row in rows), key=repr)


def exact_and_sketched(results: list[list]) -> tuple[list[list], dict[tuple, float]]:
    """The results with the label-delay quantiles' values left out (every other value is
    exact), and those values by (version, metric)."""
    exact, sketched = [], {}
    for row in results:
        if row[2] in SKETCHED:
            sketched[row[1], row[2]] = row[5]
            row = [*row[:5], None, *row[6:]]
        exact.append(row)
    return exact, sketched


def true_delays(preds: list[dict], labels: list[dict]) -> dict[str, np.ndarray]:
    """Seconds from each prediction to its first label (none for an inline one), by
    version: what the label-delay sketch summarises."""
    first = {}
    for x in sorted(labels, key=lambda x: x["timestamp"]):
        first.setdefault(x["prediction_id"], x["timestamp"])
    out: dict[str, list[float]] = {v: [] for v in VERSIONS}
    for r in preds:
        if "label" in r:
            out[r["version"]].append(0.0)
        elif r["prediction_id"] in first:
            out[r["version"]].append((first[r["prediction_id"]] - r["timestamp"])
                                     .total_seconds())
    return {v: np.sort(d) for v, d in out.items()}


def within_rank_error(quantiles: dict[tuple, float], delays: dict[str, np.ndarray],
                      name: str) -> None:
    """Each label-delay quantile a path's jobs stored is the true quantile of the delays
    up to the KLL sketch's rank error (documented in docs/jobs.md; exact up to 200 labels,
    where merging in another order gives the same sketch), doubled: the bound holds with 99%
    confidence, and it is checked a dozen times a run."""
    assert len(quantiles) == 2 * len(VERSIONS), quantiles
    for (v, metric), value in quantiles.items():
        d = delays[v]
        below, upto = np.searchsorted(d, value, "left"), np.searchsorted(d, value, "right")
        slack = 0.0 if d.size <= KLL_K else 2 * KLL_RANK_ERROR * d.size
        assert below - slack <= SKETCHED[metric] * d.size <= upto + slack, (
            name, v, metric, value, below / d.size, upto / d.size)


def replay_twice_shuffled(client, bodies: list[dict], name: str, twin: str) -> None:
    """Every upload ``name`` got, addressed to ``twin`` (its own profile of the same
    reference), sent twice in shuffled order with its summaries shuffled."""
    profile = {v: client.get(f"/v1/models/{twin}/versions/{v}/profile").json()["profile_key"]
               for v in VERSIONS}
    uploads = [{k: v for k, v in b.items() if k != "_path"} for b in bodies
               if b["_path"] == "/v1/summaries" and b["model"] == name]
    assert len(uploads) >= 2
    rng = random.Random(len(uploads))
    sends = [dict(b) for b in uploads + uploads]
    rng.shuffle(sends)
    stored = duplicates = 0
    for body in sends:
        summaries = body["summaries"][:]
        rng.shuffle(summaries)
        body.update(model=twin, summaries=summaries,
                    profile=body["profile"] and profile[body["version"]])
        r = client.post("/v1/summaries", json=body)
        assert r.status_code == 200, r.text
        stored += r.json()["accepted"]
        duplicates += r.json()["duplicates"]
    assert stored == duplicates == sum(len(b["summaries"]) for b in uploads)
    replay_outcomes(client, bodies, name, twin, rng)


def replay_outcomes(client, bodies: list[dict], name: str, twin: str,
                    rng: random.Random) -> None:
    """The thin rows and labels ``name`` sent (the summarizing client's), addressed to
    ``twin``, each batch twice: the thin rows in shuffled order, so labels often come before
    their predictions; the labels in the order they were sent (the first label of a
    prediction is the one kept, as in one clean pass)."""
    def mine(path: str) -> list[list[dict]]:
        return [[{**r, "model": twin} for r in b["records"]] for b in bodies
                if b["_path"] == path and b["records"] and b["records"][0]["model"] == name]
    thin, labels = mine("/v1/predictions"), mine("/v1/labels")
    thin = thin + thin
    rng.shuffle(thin)
    labels = [batch for batch in labels for _ in (0, 1)]
    sends = [("/v1/predictions", {"summarized": True, "records": b}) for b in thin]
    for batch in labels:  # each label batch at a random place, in their own order
        at = rng.randint(0, len(sends))
        after = max((i + 1 for i, (p, _) in enumerate(sends) if p == "/v1/labels"), default=0)
        sends.insert(max(at, after), ("/v1/labels", {"records": batch}))
    for path, body in sends:
        r = client.post(path, json=body)
        assert r.status_code in (200, 201), r.text


@pytest.mark.parametrize("task", TASKS)
def test_the_four_paths_give_the_same_summaries_reports_and_decisions(
        spark, app, client, engine, settings, tmp_path, task):
    preds, labels = log(task, N, seed=TASKS.index(task) + 40)
    data, mapping = write_lake(tmp_path, task, preds, labels)
    for name in (*PATHS, *(f"{p}-twin" for p in SUMMARIZING)):
        setup(client, task, name)
    post_raw(client, "raw", preds, labels)
    recorder = Recorder(app)
    with LiveServer(recorder) as server:
        assert cli.main(backfill_args(server.url, "lake", data, mapping,
                                      "--workers", "2")) == 0
        for name, through in (("spark", through_spark), ("spark-files", through_spark_files)):
            assert through(spark, server.url, name, data) == {"v1": N - N // 3, "v2": N // 3}
        edge = through_client(server.url, "edge", preds, labels, tmp_path / "edge", True)
        paired = through_client(server.url, "edge-paired", preds, labels,
                                tmp_path / "edge-paired", False)
    # thin rows: every label leaves as it comes and the service pairs it
    assert sum(m.stats.labels_sent for m in edge.values()) == len(labels)
    assert sum(m.stats.labels_paired + m.stats.labels_unpaired for m in edge.values()) == 0
    # in-process pairing: a label pairs where its prediction is still held
    late = {x["prediction_id"] for x in labels} & {r["prediction_id"] for r in preds}
    assert sum(m.stats.labels_paired for m in paired.values()) == len(late)
    assert sum(m.stats.labels_unpaired for m in paired.values()) == len(labels) - len(late)
    assert sum(m.stats.logged for m in paired.values()) == N
    assert sum(m.stats.logged for m in edge.values()) == N

    summaries = {name: compacted(engine, settings, name) for name in PATHS}
    kinds = {key[2] for key in summaries["raw"]}
    assert kinds == {"outcome", "drift"}
    assert sum(v[0] for k, v in summaries["raw"].items() if k[2] == "outcome") == N
    for name in SUMMARIZING:
        assert summaries[name] == summaries["raw"], differences(summaries[name],
                                                                summaries["raw"], name)

    expected = comparable(reports(client, "raw"))
    assert [v["n"] for v in expected["drift"]["versions"]] == [N - N // 3, N // 3]
    for v in expected["drift"]["versions"]:  # the PCA and embedding sums were folded
        assert v["multivariate"]["n"] == v["n"], v["multivariate"]
        (vec,) = v["embeddings"]["features"]
        assert vec["feature"] == "vec" and 0 < vec["n"] < v["n"], vec
    assert all(v["generalization_gap"]["overall"] and v["generalization_gap"]["cohorts"]
               for v in expected["cohorts"]["versions"])
    if task != "regression":  # the realized metrics beside the estimates, from the labels
        assert all(v["realized"]["labeled"] > 0 and v["realized"]["f1"] is not None
                   for v in expected["performance"]["versions"])
    for name in SUMMARIZING:
        assert comparable(reports(client, name)) == expected, name

    decided, sketched = exact_and_sketched(job_results(engine, settings, "raw"))
    assert {row[2] for row in decided} >= {
        "feature_psi", "feature_missing_ratio", "prediction_psi", "generalization_gap",
        "cohort_generalization_gap", "label_coverage", *SKETCHED, *DECIDED[task]}
    delays = true_delays(preds, labels)
    within_rank_error(sketched, delays, "raw")
    for name in SUMMARIZING:
        exact, quantiles = exact_and_sketched(job_results(engine, settings, name))
        assert exact == decided, name
        within_rank_error(quantiles, delays, name)

    for name in SUMMARIZING:
        replay_twice_shuffled(client, recorder.bodies, name, f"{name}-twin")
        assert compacted(engine, settings, f"{name}-twin") == summaries["raw"], name
        assert comparable(reports(client, f"{name}-twin")) == expected, name
