"""A rolling upgrade under ingest, on PostgreSQL: the previous release (built from git) migrates
a throwaway database and serves; a client posts predictions and labels spread over the last
hours; the new release migrates the database while the old one keeps serving, then serves on
another port, both take ingest a while (a balancer going round them), the old one is stopped
(SIGTERM) while still sent requests, and ingest goes on on the new one. Rows are then copied
in with plain SQL, as a restore would, into closed buckets. After the new release's summary
upkeep, the reports count every stored prediction and labeled prediction of every bucket once,
and every acknowledged record is stored exactly once.

The previous release is `git archive` of PREVIOUS_RELEASE, run by this interpreter (its
dependencies are a subset of this tree's) with the archive first on the path and its
migrations inside its package, as its wheel ships them. Every process the test starts is
stopped by the test, by its process id."""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from psycopg.types.json import Json

from app.evaluation.profiles import ProfileCache
from app.jobs import runner
from app.jobs.runner import aligned_end
from app.settings import Settings
from app.storage import migrate, registry
from app.storage.db import make_engine
from tests.conftest import ROOT, _psycopg_dsn, create_pg_database, drop_pg_database, free_port
from tests.factories import iso
from tests.helpers import wait_ready

# The last release that passed CI, and the head revision of its migrations.
PREVIOUS_RELEASE = "f0d4a86"
PREVIOUS_HEAD = "0013"
MODEL = "upgrade"
BUCKET = 300.0  # MODELMON_JOB_INTERVAL_SECONDS, the default
HOURS = 3  # predictions spread over the closed buckets of the last three hours
FEATURES = ("f0", "f1", "f2")


# --------------------------------------------------------------------------- the releases


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's tree, from git (a fresh clone holds it; a shallow one fails
    here, saying so)."""
    tree = tmp_path_factory.mktemp("previous-release")
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE],
                          capture_output=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"git archive {PREVIOUS_RELEASE} failed: {proc.stderr.decode()[-500:]} "
                    "(a shallow clone lacks the previous release: git fetch --unshallow)",
                    pytrace=False)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(tree, filter="data")
    # The wheel ships migrations/ inside the package as app.migrations (setup.py); so does
    # this tree, else this interpreter's editable install would map app.migrations to the
    # new release's migrations.
    shutil.copytree(tree / "migrations", tree / "app" / "migrations")
    return tree


def _env(db: str, tree: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env.update(MODELMON_DATABASE_URL=db, MODELMON_SCHEDULER_ENABLED="false",
               MODELMON_LOG_LEVEL="warning")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    else:
        env.pop("PYTHONPATH", None)
    return env


class Release:
    """One release's `modelmon` command: the previous one from its tree, or this one."""

    def __init__(self, name: str, db: str, tree: Path | None, logs: Path) -> None:
        self.name, self.db, self.tree, self.logs = name, db, tree, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args],
                              cwd=self.tree or ROOT, env=_env(self.db, self.tree),
                              capture_output=True, text=True, timeout=timeout)

    def serve(self, *args: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        log = self.logs / f"{self.name}-serve.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *args],
                cwd=self.tree or ROOT, env=_env(self.db, self.tree), stdout=out,
                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, timeout=60)
        except RuntimeError as exc:
            raise AssertionError(f"{self.name} release: {exc}\n{log.read_text()[-3000:]}") \
                from exc
        return url, proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


# --------------------------------------------------------------------------- the client


def _record(pid: str, ts: datetime, rng: random.Random, label: bool = False) -> dict[str, Any]:
    score = rng.random()
    rec = {"model": MODEL, "version": "v1", "prediction_id": pid, "timestamp": iso(ts),
           "features": {f: rng.gauss(0.0, 1.0) for f in FEATURES},
           "prediction": {"score": score}, "cohorts": {"region": rng.choice("nsew")}}
    if label:
        rec["label"] = "bad" if rng.random() < score else "good"
    return rec


class Feeder(threading.Thread):
    """Posts prediction batches spread over [start, end), labels for some earlier ones, a
    label before its prediction now and then, and re-sends a batch now and then (a client's
    retry); retries a batch refused or lost until it is acknowledged. Requests go round the
    servers in ``urls`` (a balancer), which the test changes as it goes. Keeps what each
    server acknowledged."""

    def __init__(self, start: datetime, end: datetime) -> None:
        super().__init__(daemon=True)
        self.urls: list[str] = []
        self.turn = 0
        self.start_ts, self.end_ts = start, end
        self.stop = threading.Event()
        self.rng = random.Random(28)
        self.acked: set[str] = set()
        self.labeled: set[str] = set()
        self.by_server: Counter[str] = Counter()
        self.errors: list[str] = []
        self.failure: BaseException | None = None
        self.seq = 0
        self.sent: list[dict[str, Any]] = []

    def _post(self, path: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The server's answer; ``retried`` in it when an attempt before was lost (so a
        record stored by that attempt may come back as a duplicate)."""
        deadline = time.monotonic() + 60
        attempts = 0
        with httpx2.Client(timeout=10) as client:
            while True:
                urls = self.urls
                url = urls[self.turn % len(urls)]
                self.turn += 1
                attempts += 1
                try:
                    r = client.post(f"{url}{path}", json={"records": records})
                    if r.status_code == 200:
                        self.by_server[url] += 1
                        return {**r.json(), "retried": attempts > 1}
                    self.errors.append(f"{path} {r.status_code} {r.text[:200]}")
                    if r.status_code < 500 and r.status_code != 429:
                        raise AssertionError(f"{path}: {r.status_code} {r.text[:500]}")
                except httpx2.HTTPError as exc:
                    self.errors.append(f"{path} {type(exc).__name__}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{path}: not acknowledged in 60 s: {self.errors[-3:]}")
                time.sleep(0.1)

    def _timestamp(self) -> datetime:
        span = (self.end_ts - self.start_ts).total_seconds()
        return self.start_ts + timedelta(seconds=self.rng.uniform(0, span - 1))

    def batch(self) -> None:
        n = 40
        ids = [f"p-{self.seq + i}" for i in range(n)]
        self.seq += n
        # every fourth batch, two labels come first and wait for their predictions (such a
        # batch takes the staging path; the others are copied straight in)
        early = self.rng.sample(ids, 2) if self.seq % (4 * n) == n else []
        labels = [{"model": MODEL, "prediction_id": pid, "label": "good",
                   "timestamp": iso(datetime.now(UTC))} for pid in early]
        if early:
            out = self._post("/v1/labels", labels)
            assert out["pending"] + out["duplicates"] == len(early), out
            self.labeled.update(early)
        records = [_record(pid, self._timestamp(), self.rng, label=(i % 10 == 0))
                   for i, pid in enumerate(ids)]
        out = self._post("/v1/predictions", records)
        assert out["accepted"] + out["duplicates"] == n, out
        assert out["retried"] or out["duplicates"] == 0, out
        self.acked.update(ids)
        self.labeled.update(r["prediction_id"] for r in records if "label" in r)
        self.sent.append({"records": records})
        if len(self.sent) >= 3:
            # labels for half of the batch before last; a retry of the batch before that
            older = self.sent[-2]["records"]
            todo = [r for r in older if r["prediction_id"] not in self.labeled][::2]
            if todo:
                out = self._post("/v1/labels", [
                    {"model": MODEL, "prediction_id": r["prediction_id"],
                     "label": self.rng.choice(["good", "bad"]),
                     "timestamp": iso(datetime.now(UTC))} for r in todo])
                assert out["matched"] + out["duplicates"] == len(todo), out
                assert out["retried"] or out["duplicates"] == 0, out
                self.labeled.update(r["prediction_id"] for r in todo)
            if self.rng.random() < 0.2:
                again = self._post("/v1/predictions", self.sent[-3]["records"])
                assert again["accepted"] == 0, again

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.batch()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.failure = exc

    def acknowledged_by(self, url: str) -> int:
        return self.by_server[url]

    def wait_acks(self, url: str, more: int, timeout: float = 60) -> None:
        target = self.by_server[url] + more
        deadline = time.monotonic() + timeout
        while self.by_server[url] < target:
            assert self.failure is None, self.failure
            assert time.monotonic() < deadline, f"{url}: fewer than {more} batches acknowledged"
            time.sleep(0.05)


def _reference_csv(rng: random.Random, n: int = 500) -> bytes:
    lines = [",".join((*FEATURES, "score"))]
    lines += [",".join(f"{rng.gauss(0.0, 1.0):.6f}" for _ in FEATURES) + f",{rng.random():.6f}"
              for _ in range(n)]
    return ("\n".join(lines) + "\n").encode()


def _register(url: str) -> None:
    model = {"name": MODEL, "task": "binary_classification", "classes": ["good", "bad"],
             "features": [{"name": f, "type": "numeric"} for f in FEATURES],
             "cohort_keys": ["region"]}
    with httpx2.Client(base_url=url, timeout=30) as c:
        for path, kwargs in (("/v1/models", {"json": model}),
                             (f"/v1/models/{MODEL}/versions", {"json": {"version": "v1"}}),
                             (f"/v1/models/{MODEL}/versions/v1/reference", {
                                 "content": _reference_csv(random.Random(1)),
                                 "headers": {"content-type": "text/csv"}})):
            r = c.post(path, **kwargs)
            assert r.status_code in (200, 201), (path, r.status_code, r.text)


# --------------------------------------------------------------------------- the database


def _sql(db: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(_psycopg_dsn(db), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _revision(db: str) -> str:
    return _sql(db, "SELECT version_num FROM alembic_version")[0][0]


def _stored_by_bucket(db: str) -> dict[datetime, tuple[int, int]]:
    """(predictions, labeled predictions) stored per bucket, counted by SQL."""
    rows = _sql(db, """
        SELECT floor(extract(epoch FROM p.ts) / %s)::bigint, count(*), count(l.prediction_id)
        FROM predictions p JOIN models m ON m.id = p.model_id
        LEFT JOIN labels l ON l.model_id = p.model_id AND l.prediction_id = p.prediction_id
        WHERE m.name = %s GROUP BY 1""", (BUCKET, MODEL))
    return {datetime.fromtimestamp(b * BUCKET, UTC): (n, k) for b, n, k in rows}


def _restore(db: str, buckets: list[datetime], rng: random.Random) -> tuple[set[str], set[str]]:
    """Predictions and labels copied in with SQL (a restore, a process that does not
    summarise): 20 predictions in each of ``buckets``, labels for half of them and for ten
    stored predictions that had none. Returns (prediction ids, labeled ids)."""
    predictions: set[str] = set()
    labeled: set[str] = set()
    with psycopg.connect(_psycopg_dsn(db)) as conn:
        (model_id, version_id), = conn.execute(
            "SELECT m.id, v.id FROM models m JOIN model_versions v ON v.model_id = m.id "
            "WHERE m.name = %s", (MODEL,)).fetchall()
        unlabeled = [r[0] for r in conn.execute(
            "SELECT p.prediction_id FROM predictions p LEFT JOIN labels l ON "
            "l.model_id = p.model_id AND l.prediction_id = p.prediction_id WHERE "
            "p.model_id = %s AND l.prediction_id IS NULL ORDER BY p.prediction_id LIMIT 10",
            (model_id,))]
        now = datetime.now(UTC)
        for b, bucket in enumerate(buckets):
            for i in range(20):
                pid = f"restored-{b}-{i}"
                ts = bucket + timedelta(seconds=rng.uniform(0, BUCKET - 1))
                conn.execute("INSERT INTO prediction_keys (model_id, prediction_id, ts) "
                             "VALUES (%s, %s, %s)", (model_id, pid, ts))
                conn.execute(
                    "INSERT INTO predictions (model_id, ts, prediction_id, version_id, "
                    "received_at, features, cohorts, score) VALUES (%s, %s, %s, %s, %s, %s, "
                    "%s, %s)", (model_id, ts, pid, version_id, now,
                                Json({f: rng.gauss(0.0, 1.0) for f in FEATURES}),
                                Json({"region": "north"}), rng.random()))
                predictions.add(pid)
                if i % 2 == 0:
                    labeled.add(pid)
        for pid in sorted(labeled) + unlabeled:
            conn.execute("INSERT INTO labels (model_id, prediction_id, label_class, ts, "
                         "received_at, source) VALUES (%s, %s, %s, %s, %s, 'labels')",
                         (model_id, pid, rng.choice(["good", "bad"]), now, now))
        labeled.update(unlabeled)
    return predictions, labeled


# --------------------------------------------------------------------------- the reports


def _counted(url: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(predictions, labeled predictions) the new release's reports count over [start, end):
    drift's n, the values each column's drift counts (no value is missing in this traffic) and
    calibration's predictions must agree; calibration's n is the labeled ones."""
    q = {"start": iso(start), "end": iso(end)}
    with httpx2.Client(base_url=f"{url}/v1/models/{MODEL}/reports", timeout=30) as c:
        drift, calibration = c.get("/drift", params=q), c.get("/calibration", params=q)
    assert drift.status_code == 200, drift.text
    assert calibration.status_code == 200, calibration.text
    (d,), (cal,) = drift.json()["versions"], calibration.json()["versions"]
    n = d["n"]
    for column in [*d["features"], d["prediction"]]:
        assert column["n_current"] == sum(column["current_counts"]) == n, (start, column)
    assert cal["predictions"] == n and cal["n_dropped"] == 0, (start, cal)
    return n, cal["n"]


def _hours(buckets: list[datetime]) -> list[datetime]:
    return sorted({aligned_end(b, 3600) for b in buckets})


def _differing(url: str, stored: dict[datetime, tuple[int, int]]
               ) -> dict[tuple[str, datetime], Any]:
    """Buckets and hours whose reports do not count what is stored in them: (reported,
    stored)."""
    step, hour = timedelta(seconds=BUCKET), timedelta(hours=1)
    out: dict[datetime, Any] = {}
    for b, counts in sorted(stored.items()):
        reported = _counted(url, b, b + step)
        if reported != counts:
            out[("bucket", b)] = (reported, counts)
    for h in _hours(list(stored)):
        counts = tuple(map(sum, zip(*(c for b, c in stored.items() if h <= b < h + hour),
                                    strict=True)))
        reported = _counted(url, h, h + hour)
        if reported != counts:
            out[("hour", h)] = (reported, counts)
    return out


def _upkeep(db: str) -> dict[str, int]:
    """The new release's summary upkeep, as its scheduler runs it, with the audit due."""
    settings = Settings(database_url=db)
    engine = make_engine(settings)
    try:
        runner._last_audit.clear()
        with engine.connect() as conn:
            models = [m for m, _ in registry.list_models(conn=conn)]
        return runner.maintain_summaries(engine, settings, datetime.now(UTC), ProfileCache(),
                                         models)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the upgrade


@pytest.fixture
def db() -> Iterator[str]:
    url = create_pg_database("modelmon_upgrade")
    yield url
    drop_pg_database(url)


def test_rolling_upgrade_under_ingest_reports_every_stored_row_once(
        db: str, previous_release: Path, tmp_path: Path) -> None:
    old = Release("previous", db, previous_release, tmp_path)
    new = Release("new", db, None, tmp_path)
    end = aligned_end(datetime.now(UTC), BUCKET)  # the open bucket's start: all closed
    feeder = Feeder(end - timedelta(hours=HOURS), end)
    try:
        old_url, old_proc = old.serve()  # migrates to the previous head, then serves
        assert _revision(db) == PREVIOUS_HEAD
        _register(old_url)
        feeder.urls = [old_url]
        feeder.start()
        feeder.wait_acks(old_url, 10)
        migrated = new.run("migrate")
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        assert _revision(db) == migrate.head_revision() != PREVIOUS_HEAD
        feeder.wait_acks(old_url, 10)  # the previous release stores on the new schema
        old_ready = httpx2.get(f"{old_url}/readyz", timeout=10)
        new_url, _ = new.serve("--no-migrate")
        feeder.urls = [old_url, new_url]  # both serve a while, as in a rollout
        feeder.wait_acks(new_url, 10)
        feeder.wait_acks(old_url, 10)
        # the old one stopped while the balancer still sends to it: a request in flight is
        # answered (uvicorn drains), one refused is sent again, to the next server
        old_proc.send_signal(signal.SIGTERM)
        assert old_proc.wait(timeout=60) in (0, -signal.SIGTERM)  # drained, then the signal
        feeder.urls = [new_url]
        feeder.wait_acks(new_url, 20)
        feeder.stop.set()
        feeder.join(timeout=90)
        assert not feeder.is_alive() and feeder.failure is None, feeder.failure
        # the previous release's readiness fails on a schema newer than its own, and so does
        # its migration (docs/operations.md: upgrading from a release before this one)
        assert old_ready.status_code == 503 and old_ready.json()["expected"] == PREVIOUS_HEAD
        again = old.run("migrate")
        assert again.returncode != 0 and "Can't locate revision" in again.stderr
        assert feeder.acknowledged_by(old_url) >= 30 and feeder.acknowledged_by(new_url) >= 30

        # every acknowledged record stored once, nothing else stored
        ids = _sql(db, "SELECT p.prediction_id FROM predictions p JOIN models m ON "
                       "m.id = p.model_id WHERE m.name = %s", (MODEL,))
        assert len(ids) == len(feeder.acked) and {i for i, in ids} == feeder.acked
        labeled = _sql(db, "SELECT l.prediction_id FROM labels l JOIN models m ON "
                           "m.id = l.model_id WHERE m.name = %s", (MODEL,))
        assert len(labeled) == len(feeder.labeled) and {i for i, in labeled} == feeder.labeled

        # rows copied in by SQL, summarised by nobody: the reports miss them until the upkeep
        before = _stored_by_bucket(db)
        restored, restored_labels = _restore(db, [min(before), sorted(before)[len(before) // 2]],
                                             random.Random(7))
        stored = _stored_by_bucket(db)
        touched = {b for b in stored if stored[b] != before.get(b)}
        assert sum(n for n, _ in stored.values()) == len(feeder.acked) + len(restored)
        assert sum(k for _, k in stored.values()) == len(feeder.labeled) + len(restored_labels)
        missed = _differing(new_url, stored)
        assert {b for kind, b in missed if kind == "bucket"} == touched, missed
        assert {b for kind, b in missed if kind == "hour"} == set(_hours(list(touched)))

        upkeep = _upkeep(db)
        assert upkeep["repaired_buckets"] == len(touched), upkeep
        assert upkeep["audited_buckets"] == len(stored), upkeep
        assert _differing(new_url, stored) == {}
    finally:
        feeder.stop.set()
        if feeder.is_alive():
            feeder.join(timeout=30)
        old.stop_all()
        new.stop_all()
