"""`modelmon backfill`: a prediction log written as a hive-partitioned Parquet dataset (late
labels in a second one, missing values, unseen categories, cohorts, two versions) gives the
same drift, calibration and cohort reports as the same records POSTed raw; a backfill killed
with SIGKILL mid-way (an upload stored but never answered) and run again counts everything
exactly once, and a third run adds nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from app import cli
from app.cli import lake
from app.cli.errors import CliError
from app.storage.tables import bucket_summaries, models
from tests.api.test_summaries_api import comparable, reports, window
from tests.cli.test_report_cli import modelmon
from tests.conftest import ROOT, LiveServer
from tests.factories import binary_model, iso, multiclass_model, regression_model, version

VERSIONS = ("v1", "v2")
CLASSES = ["setosa", "versicolor", "virginica"]
MODELS = {
    "binary": lambda name: binary_model(name),
    "multiclass": lambda name: multiclass_model(
        name, features=[{"name": "petal", "type": "numeric"},
                        {"name": "country", "type": "categorical"}],
        cohort_keys=["region"], classes=CLASSES),
    "regression": lambda name: regression_model(
        name, features=[{"name": "amount", "type": "numeric"}], cohort_keys=["region"]),
}


def log(task: str, n: int, seed: int = 5) -> tuple[list[dict], list[dict]]:
    """Predictions of the last-but-one hour and their labels: a quarter labeled inline, half
    labeled late (some corrected later still: the first label wins), labels for predictions
    that do not exist; missing values, a category the reference never saw, three regions."""
    rng = np.random.default_rng(seed)
    start, _ = window()
    preds, labels = [], []
    for i in range(n):
        ts = start + timedelta(seconds=float(rng.uniform(0, 3599)))
        rec = {"prediction_id": f"{task}-{i}", "timestamp": ts, "version": VERSIONS[i % 3 == 0],
               "cohorts": {"region": ["eu", "us", "apac"][i % 3]}}
        number = None if i % 17 == 0 else float(np.round(rng.normal(60, 20), 2))
        country = ["DE", "FR", "PL", "XX", None][i % 5]
        if task == "binary":
            score = float(np.round(rng.beta(2, 5), 4))
            rec.update(features={"amount": number, "country": country},
                       prediction={"score": score})
            truth = "fraud" if rng.random() < score else "legit"
        elif task == "multiclass":
            p = np.round(rng.dirichlet([3, 2, 1]), 4)
            p[2] = np.round(1 - p[0] - p[1], 4)
            rec.update(features={"petal": number, "country": country},
                       prediction={"probabilities": dict(zip(CLASSES, map(float, p),
                                                             strict=True))})
            truth = CLASSES[int(rng.choice(3, p=p / p.sum()))]
        else:
            value = float(np.round(rng.gamma(4, 10), 3))
            rec.update(features={"amount": number}, prediction={"value": value})
            truth = float(np.round(value + rng.normal(0, 5), 3))
        if i % 4 == 0:
            rec["label"] = truth
        elif i % 4 in (1, 2):
            at = ts + timedelta(minutes=float(rng.uniform(1, 180)))
            labels.append({"prediction_id": rec["prediction_id"], "label": truth,
                           "timestamp": at})
            if i % 8 == 2:  # a correction: later, so the service never stores it
                labels.append({"prediction_id": rec["prediction_id"], "label": truth,
                               "timestamp": at + timedelta(hours=1)})
        preds.append(rec)
    labels += [{"prediction_id": f"ghost-{i}", "label": preds[i].get("label") or truth,
                "timestamp": start + timedelta(minutes=i)} for i in range(5)]
    return preds, labels


def write_lake(root: Path, task: str, preds: list[dict], labels: list[dict]) -> tuple[str, str]:
    """Predictions partitioned by version and quarter hour under their own column names
    (event_time, geo), labels by the hour they came in (pid, outcome, labeled_at)."""
    rows = []
    for r in preds:
        row = {"prediction_id": r["prediction_id"], "event_time": r["timestamp"],
               "version": r["version"], "quarter": r["timestamp"].minute // 15,
               "geo": r["cohorts"]["region"], **r["features"], **r["prediction"]}
        row["label"] = r.get("label")
        rows.append(row)
    label_type = pa.float64() if task == "regression" else pa.string()
    table = pa.Table.from_pylist(rows)
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             table.column("label").cast(label_type))
    pq.write_to_dataset(table, root / "predictions", partition_cols=["version", "quarter"])
    pq.write_to_dataset(pa.Table.from_pylist(
        [{"pid": x["prediction_id"], "outcome": x["label"], "labeled_at": x["timestamp"],
          "hour": x["timestamp"].hour} for x in labels],
        schema=pa.schema([("pid", pa.string()), ("outcome", label_type),
                          ("labeled_at", pa.timestamp("us", "UTC")), ("hour", pa.int64())])),
        root / "labels", partition_cols=["hour"])
    mapping = root / "mapping.json"
    mapping.write_text(json.dumps({"timestamp": "event_time", "labels": {
        "id": "pid", "label": "outcome", "timestamp": "labeled_at"}}))
    return str(root / "predictions"), str(mapping)


def reference(task: str, i: int) -> dict:
    rng = np.random.default_rng(i)
    number = float(np.round(rng.normal(50, 20), 2))
    if task == "binary":
        return {"amount": number, "country": ["DE", "FR", "PL"][i % 3],
                "score": float(rng.beta(2, 5))}
    if task == "multiclass":
        return {"petal": number, "country": ["DE", "FR", "PL"][i % 3],
                "predicted_label": CLASSES[i % 3]}
    return {"amount": number, "value": float(rng.gamma(4, 10))}


def setup(client, task: str, name: str, with_reference: tuple[str, ...] = VERSIONS) -> None:
    assert client.post("/v1/models", json=MODELS[task](name)).status_code == 201
    for v in VERSIONS:
        assert client.post(f"/v1/models/{name}/versions", json=version(v)).status_code == 201
        if v in with_reference:
            r = client.post(f"/v1/models/{name}/versions/{v}/reference", json={
                "records": [reference(task, i + (v == "v2") * 7) for i in range(600)]})
            assert r.status_code == 201, r.text


def post_raw(client, name: str, preds: list[dict], labels: list[dict]) -> None:
    records = [{"model": name, "version": r["version"], "prediction_id": r["prediction_id"],
                "timestamp": iso(r["timestamp"]), "features": r["features"],
                "cohorts": r["cohorts"], "prediction": r["prediction"],
                **({"label": r["label"]} if "label" in r else {})} for r in preds]
    for i in range(0, len(records), 500):
        r = client.post("/v1/predictions", json={"records": records[i:i + 500]})
        assert r.status_code == 200, r.text
    late = [{"model": name, "prediction_id": x["prediction_id"], "label": x["label"],
             "timestamp": iso(x["timestamp"])} for x in sorted(labels,
                                                                key=lambda x: x["timestamp"])]
    assert client.post("/v1/labels", json={"records": late}).status_code == 200


def all_reports(client, name: str) -> dict:
    out = reports(client, name)
    assert out["drift"]["versions"], out
    return comparable(out)


def backfill_args(url: str, name: str, data: str, mapping: str, *more: str) -> list[str]:
    start, end = window()
    labels = Path(data.removeprefix("file://")).parent / "labels"
    return ["backfill", data, "--model", name, "--url", url, "--labels", str(labels),
            "--mapping", mapping, "--map", "cohorts.region=geo", "--start", iso(start),
            "--end", iso(end), *more]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_backfill_reports_what_raw_ingest_reports(client, live_server, tmp_path, capsys,
                                                     task):
    preds, labels = log(task, 1500)
    data, mapping = write_lake(tmp_path, task, preds, labels)
    setup(client, task, "raw")
    setup(client, task, "lake")
    post_raw(client, "raw", preds, labels)
    assert cli.main(backfill_args(live_server.url, "lake", data, mapping,
                                  "--workers", "2")) == 0
    out = capsys.readouterr()
    assert "1500 predictions in 8 files summarised for lake" in out.out, out
    assert ", 0 already stored, 1500 predictions counted" in out.out
    raw, lake = all_reports(client, "raw"), all_reports(client, "lake")
    assert sum(v["n"] for v in lake["drift"]["versions"]) == 1500
    assert lake == raw
    # the same dataset again (as a file:// URL this time): every summary is recognised as
    # sent by the same source, nothing counts twice
    assert cli.main(backfill_args(live_server.url, "lake", f"file://{data}", mapping,
                                  "--workers", "1")) == 0
    assert "0 summaries stored" in capsys.readouterr().out
    assert all_reports(client, "lake") == raw


def test_a_version_without_reference_sends_outcomes_only_and_says_so(client, live_server,
                                                                    tmp_path, capsys):
    preds, labels = log("binary", 600)
    data, mapping = write_lake(tmp_path, "binary", preds, labels)
    setup(client, "binary", "raw", with_reference=("v1",))
    setup(client, "binary", "lake", with_reference=("v1",))
    post_raw(client, "raw", preds, labels)
    assert cli.main(backfill_args(live_server.url, "lake", data, mapping)) == 0
    out = capsys.readouterr()
    assert "note: version v2 has no reference profile: only its outcome summaries" in out.err
    raw, lake = reports(client, "raw"), reports(client, "lake")
    assert comparable(lake["calibration"]) == comparable(raw["calibration"])
    assert comparable(lake["cohorts"]) == comparable(raw["cohorts"])
    lake_drift = {v["version"]: v for v in comparable(lake["drift"])["versions"]}
    raw_drift = {v["version"]: v for v in comparable(raw["drift"])["versions"]}
    assert lake_drift["v1"] == raw_drift["v1"]
    # v2's predictions are counted, but with no reference and no raw rows there is nothing
    # to compare them with (raw ingest falls back on the version's own first traffic)
    assert lake_drift["v2"]["n"] == raw_drift["v2"]["n"] == 200
    assert lake_drift["v2"]["reference"]["source"] == "none"
    assert lake_drift["v2"]["features"] == [] and raw_drift["v2"]["features"]


class Gate:
    """The app behind a gate: once ``free`` uploads of summaries are answered, the next ones
    are stored but their answers held until ``release``, as when a backfill dies between the
    service's commit and the answer."""

    def __init__(self, app) -> None:
        self.app, self.free, self.held = app, 10**9, 0
        self.released = threading.Event()
        self.uploads = 0
        self.before = None  # a coroutine run before an upload reaches the app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/summaries":
            return await self.app(scope, receive, send)
        self.uploads += 1
        if self.before is not None:
            await self.before()
        if self.uploads <= self.free:
            return await self.app(scope, receive, send)

        async def held(message):
            if message["type"] == "http.response.start":
                self.held += 1
                while not self.released.is_set():
                    await asyncio.sleep(0.01)
            await send(message)

        return await self.app(scope, receive, held)


def totals(engine, name: str) -> list[tuple]:
    with engine.connect() as conn:
        mid = conn.execute(select(models.c.id).where(models.c.name == name)).scalar_one()
        return [tuple(r) for r in conn.execute(
            select(bucket_summaries.c.kind, func.count(), func.sum(bucket_summaries.c.n))
            .where(bucket_summaries.c.model_id == mid).group_by(bucket_summaries.c.kind)
            .order_by(bucket_summaries.c.kind))]


def acknowledged(state: Path) -> int:
    try:
        return len(json.loads(state.read_text())["done"])
    except (FileNotFoundError, ValueError):
        return 0


def test_a_backfill_killed_mid_way_and_run_again_counts_everything_once(app, client, engine,
                                                                       tmp_path):
    preds, labels = log("binary", 2400, seed=11)
    data, mapping = write_lake(tmp_path, "binary", preds, labels)
    setup(client, "binary", "clean")
    setup(client, "binary", "lake")
    gate = Gate(app)
    state = tmp_path / "backfill.state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with LiveServer(gate) as server:
        done = modelmon(*backfill_args(server.url, "clean", data, mapping), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        clean = totals(engine, "clean")
        assert clean[1][2] == 2400  # every prediction counted once by the outcome summaries

        gate.free = gate.uploads + 1  # one upload per file: the first answered, the next held
        args = backfill_args(server.url, "lake", data, mapping, "--workers", "2", "--state",
                             str(state))
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while gate.held < 1 or acknowledged(state) < 1:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the backfill never got that far"
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        gate.released.set()
        assert acknowledged(state) == 1
        partial = totals(engine, "lake")
        assert 0 < partial[1][2] < 2400  # stored: two files, answered: one

        again = modelmon(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "1 files confirmed by an earlier run (--state)" in again.stdout
        assert ", 0 already stored" not in again.stdout  # the unanswered uploads came again
        # not a terminal: the progress is plain lines, the last one when it is done
        last = again.stderr.strip().splitlines()[-1]
        assert last.startswith("backfill lake: 7/7 files, ") and " rows/s, ETA " in last
        assert totals(engine, "lake") == clean
        assert comparable(reports(client, "lake")) == comparable(reports(client, "clean"))

        third = modelmon(*args, cwd=tmp_path)
        assert third.returncode == 0, third.stderr
        assert "0 predictions in 0 files" in third.stdout
        assert "8 files confirmed by an earlier run" in third.stdout
        without_state = modelmon(*args[:-2], cwd=tmp_path)
        assert without_state.returncode == 0, without_state.stderr
        assert "0 summaries stored" in without_state.stdout
        assert totals(engine, "lake") == clean


def test_a_profile_changed_mid_run_is_fetched_again_and_named(app, client, engine, tmp_path,
                                                              capsys):
    """A new reference for v1 lands after the first file's upload: the second upload is
    refused as stale (409), the profile fetched again, the user told, and the rest summarised
    on the new one; every prediction still counts once."""
    preds, labels = log("binary", 1200, seed=2)
    data, mapping = write_lake(tmp_path, "binary", preds, labels)
    setup(client, "binary", "lake")
    old = client.get("/v1/models/lake/versions/v1/profile").json()["profile_key"]
    gate = Gate(app)

    async def hook():
        if gate.uploads == 2:  # before the second upload is read
            # the version has predictions by then: a new reference is an explicit replace
            r = await asyncio.to_thread(client.post, "/v1/models/lake/versions/v1/reference",
                                        params={"replace": "true"},
                                        json={"records": [reference("binary", i + 99)
                                                          for i in range(500)]})
            assert r.status_code == 201, r.text

    gate.before = hook
    with LiveServer(gate) as server:
        assert cli.main(backfill_args(server.url, "lake", data, mapping, "--workers",
                                      "1")) == 0
    out = capsys.readouterr()
    new = client.get("/v1/models/lake/versions/v1/profile").json()["profile_key"]
    assert new != old
    assert (f"note: the reference profile of version v1 changed during the backfill ({old} "
            f"-> {new}): the buckets already sent on the old one stay") in out.err
    assert "1200 predictions counted" in out.out
    assert totals(engine, "lake")[1][2] == 1200
    with engine.connect() as conn:
        keys = dict(conn.execute(select(bucket_summaries.c.profile_key, func.sum(
            bucket_summaries.c.n)).where(bucket_summaries.c.kind == "drift").group_by(
            bucket_summaries.c.profile_key)).all())
    first = sorted(p for p in (Path(data) / "version=v1").rglob("*.parquet"))[0]
    assert keys.pop(old) == pq.read_table(first).num_rows  # the first file, on the old one
    assert keys.pop(new) == 800 - pq.read_table(first).num_rows  # v1's other files
    assert len(keys) == 1 and sum(keys.values()) == 400  # v2, on its own profile


def test_backfill_errors_are_one_line_on_stderr(client, live_server, tmp_path, capsys):
    preds, labels = log("binary", 300)
    data, mapping = write_lake(tmp_path, "binary", preds, labels)
    setup(client, "binary", "lake")
    assert client.post("/v1/models", json=binary_model("solo")).status_code == 201
    assert client.post("/v1/models/solo/versions", json=version("v1")).status_code == 201
    start, end = window()

    def error(*more, model="lake", dataset=data, region="cohorts.region=geo", at=start):
        span = ["--start", iso(at), "--end", iso(end)] if at else []
        args = ["backfill", dataset, "--model", model, "--url", live_server.url, "--labels",
                str(Path(data).parent / "labels"), "--mapping", mapping, *span,
                *(["--map", region] if region else []), *more]
        return _error(capsys, args)

    assert "nowhere: no such file" in error(dataset=str(tmp_path / "nowhere"))
    assert "unknown mapping key x (known: timestamp" in error("--map", "x=y")
    line = error(region=None)
    assert "no column for cohorts.region (column 'region')" in line
    assert "--map key=column" in line
    assert "no column for id (the prediction id the labels are joined by)" in error(
        "--map", "id=")
    assert "bucket boundaries" in error(at=start + timedelta(seconds=30))
    assert "not both" in error("--version", "v1", "--map", "version=version")
    assert "names versions v2 that 'solo' does not have" in error(model="solo")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"key": {"source": "other"}, "done": {}}))
    assert "belongs to another backfill" in error("--state", str(state))
    assert "--label-lag" in error("--label-lag", "soon")  # argparse: exit 2
    # 40 days old: past the service's retention; the refusal names the buckets
    for r in preds:
        r["timestamp"] -= timedelta(days=40)
    old, _ = write_lake(tmp_path / "old", "binary", preds, labels)
    line = error(dataset=old, at=None)
    assert re.search(r"error: version=(v\d)/quarter=\d/[^ ]+\.parquet: version \1: 422 ", line)
    assert "outcome of the bucket at " in line and "outside the accepted time range" in line
    assert "files are acknowledged; run the same command again" in line


def test_map_names_keys_and_columns_that_hold_an_equals_sign(client, live_server, tmp_path,
                                                             capsys):
    """`--map KEY=COLUMN` is cut after the model's key, so a feature named `amount=usd` maps
    to a column named `amt=raw` on the command line, as a mapping file can; a cut that two
    keys allow is refused, naming both."""
    model = regression_model("eq", features=[{"name": "amount=usd", "type": "numeric"}],
                             cohort_keys=["region"])
    assert client.post("/v1/models", json=model).status_code == 201
    assert client.post("/v1/models/eq/versions", json=version("v1")).status_code == 201
    rng = np.random.default_rng(9)
    r = client.post("/v1/models/eq/versions/v1/reference", json={"records": [
        {"amount=usd": float(rng.normal(50, 10)), "value": float(rng.gamma(4, 10))}
        for _ in range(200)]})
    assert r.status_code == 201, r.text
    start, end = window()
    n = 240
    pq.write_table(pa.table({
        "prediction_id": [f"eq-{i}" for i in range(n)],
        "event=time": [start + timedelta(seconds=15 * i) for i in range(n)],
        "amt=raw": rng.normal(80, 10, n), "region": ["eu", "us"] * (n // 2),
        "value": rng.gamma(4, 10, n)}), tmp_path / "part-0.parquet")
    args = ["backfill", str(tmp_path), "--model", "eq", "--version", "v1", "--url",
            live_server.url, "--map", "timestamp=event=time", "--map",
            "features.amount=usd=amt=raw", "--start", iso(start), "--end", iso(end)]
    assert cli.main(args) == 0, capsys.readouterr()
    assert f"{n} predictions counted" in capsys.readouterr().out
    drift = client.get("/v1/models/eq/reports/drift", params={
        "start": iso(start), "end": iso(end)}).json()
    (row,) = [f for f in drift["versions"][0]["features"] if f["feature"] == "amount=usd"]
    assert row["n_current"] == n and row["missing_rate"] == 0  # read from amt=raw
    assert row["psi"] > 1  # the lake's amounts sit 3 standard deviations off the reference
    # the split, on its own: either side may hold '='; two keys that fit are named
    known = {"timestamp", "features.a=b"}
    assert lake.read_mapping(None, ["timestamp=t=0", "features.a=b=c"], known) == {
        "timestamp": "t=0", "features.a=b": "c"}
    assert lake.read_mapping(None, ["features.a=b="], known) == {
        "features.a=b": None}  # KEY= with no column: not in the data
    both = {"features.a", "features.a=b"}
    assert lake.read_mapping(None, ["features.a=="], both) == {"features.a": "="}
    with pytest.raises(CliError, match="'features.a' and 'features.a=b' are both keys"):
        lake.read_mapping(None, ["features.a=b=c"], both)
    with pytest.raises(CliError, match="must be key=column"):
        lake.read_mapping(None, ["=x"], known)
    # an unknown key is cut at its first '=' and named as before
    assert lake.read_mapping(None, ["x=y=z"], known) == {"x": "y=z"}


def _error(capsys, args: list[str]) -> str:
    """The command fails with one line on stderr, no traceback; that line."""
    try:
        code = cli.main(args)
    except SystemExit as exit_:  # argparse refuses the invocation itself
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2), (code, err)
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("modelmon backfill: error: "), err
    return err[-1]


def test_on_a_terminal_the_progress_is_a_bar_with_rows_per_second(monkeypatch):
    import io

    from app.cli.lake_run import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setenv("COLUMNS", "200")
    with Progress("backfill lake", 1000, 2) as progress:
        progress.advance(400, "3 summaries stored, 0 already stored")
        progress.note("note: something to say")
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert "backfill lake" in shown and "400/1000" in shown and "rows" in shown
    assert "/s" in shown and "3 summaries stored" in shown and "note: something to say" in shown
