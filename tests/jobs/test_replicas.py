"""Several replicas on one Postgres: `modelmon serve` and two `modelmon worker` processes
share the scheduled work for 20+ ticks; every (job, model, window) is computed exactly once,
no window is missing, and a worker killed with SIGKILL in the middle of a job leaves no
partial rows: the window it held is computed by another replica."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import httpx2
import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ROOT, create_pg_database, drop_pg_database, free_port
from tests.factories import iso
from tests.helpers import wait_ready
from tests.jobs_data import drift_model, reference_csv

INTERVAL = 2  # seconds between ticks (and between window ends)
RUN_SECONDS = 56
JOBS = ("drift", "calibration", "cohorts", "labels")


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def replica_db():
    url = create_pg_database("modelmon_replicas")
    yield url
    drop_pg_database(url)


def _spawn(args: list[str], env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _traffic(url: str, stop: threading.Event, sent: list[int]) -> None:
    rng = np.random.default_rng(1)
    with httpx2.Client(base_url=url, timeout=30) as c:
        i = 0
        while not stop.is_set():
            now = datetime.now(UTC)
            x = rng.normal(size=(200, 20))
            records = [{
                "model": "credit", "version": "v1", "prediction_id": f"r{i + k}",
                "timestamp": iso(now - timedelta(milliseconds=k)),
                "features": {**{f"f{j}": float(x[k, j]) for j in range(20)}, "channel": "web"},
                "prediction": {"score": float(rng.random())},
                "cohorts": {"region": ["north", "south"][k % 2]}, "label": "good",
            } for k in range(200)]
            r = c.post("/v1/predictions", json={"records": records})
            assert r.status_code == 200, r.text
            i += 200
            sent[0] = i
            stop.wait(0.1)


def _holding_job_lock(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
            (f"modelmon:{pid}",)).fetchone()[0] > 0


def test_two_workers_and_a_server_share_the_work_exactly_once(replica_db, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELMON_DATABASE_URL": replica_db,
           "MODELMON_SCHEDULER_ENABLED": "true", "MODELMON_JOB_INTERVAL_SECONDS": str(INTERVAL),
           "MODELMON_JOB_WINDOW_SECONDS": "10", "MODELMON_JOB_CATCHUP_WINDOWS": "30",
           "MODELMON_LOG_LEVEL": "warning", "MODELMON_THRESHOLD_MIN_N": "50"}
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("serve", "w1", "w2")}
    procs: dict[str, subprocess.Popen] = {}
    stop = threading.Event()
    sent = [0]
    killed_at = None
    try:
        procs["serve"] = _spawn(["serve", "--port", str(port)], env, logs["serve"])
        wait_ready(url, procs["serve"])
        with httpx2.Client(base_url=url, timeout=30) as c:
            assert c.post("/v1/models", json=drift_model()).status_code == 201
            assert c.post("/v1/models/credit/versions", json={"version": "v1"}).status_code == 201
            r = c.post("/v1/models/credit/versions/v1/reference",
                       content=reference_csv(np.random.default_rng(2), 3000),
                       headers={"content-type": "text/csv"})
            assert r.status_code == 201, r.text
        # Two workers on one host: each its own /metrics port.
        p1 = free_port()
        p2 = next(p for p in iter(free_port, None) if p != p1)
        procs["w1"] = _spawn(["worker", "--metrics-port", str(p1)], env, logs["w1"])
        procs["w2"] = _spawn(["worker", "--metrics-port", str(p2)], env, logs["w2"])
        feeder = threading.Thread(target=_traffic, args=(url, stop, sent), daemon=True)
        feeder.start()
        started = time.monotonic()
        victim = procs["w1"]
        while time.monotonic() - started < RUN_SECONDS:
            if (killed_at is None and time.monotonic() - started > RUN_SECONDS / 3
                    and _holding_job_lock(_dsn(replica_db), victim.pid)):
                victim.send_signal(signal.SIGKILL)  # in the middle of a job
                killed_at = datetime.now(UTC)
            time.sleep(0.02)
        stop.set()
        feeder.join(timeout=30)
    finally:
        stop.set()
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
    assert killed_at is not None, "the worker was never seen holding a job lock"
    assert sent[0] > 0

    with psycopg.connect(_dsn(replica_db)) as conn:
        runs = conn.execute("SELECT job, window_end, status, worker FROM job_runs "
                            "WHERE model_id IS NOT NULL").fetchall()
        result_windows = conn.execute(
            "SELECT job, window_end, count(*) FROM metric_results GROUP BY job, window_end"
        ).fetchall()
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM metric_results GROUP BY job, model_id, "
            "version_id, metric, subject, window_start, window_end HAVING count(*) > 1) d"
        ).fetchone()[0]
    assert dupes == 0
    success = defaultdict(list)
    for job, end, status, _worker in runs:
        if status == "success":
            success[job].append(end)
    failures = [r for r in runs if r[2] == "failure"]
    assert failures == [], failures
    for job in JOBS:
        ends = sorted(success[job])
        assert len(ends) >= 20, (job, len(ends))
        assert len(ends) == len(set(ends)), f"{job}: a window computed twice"
        gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)
                if b - a != timedelta(seconds=INTERVAL)]
        assert gaps == [], f"{job}: missing windows {gaps}"
    # every stored result belongs to a window with a recorded success: no partial rows
    done = {(job, end) for job, ends in success.items() for end in ends}
    orphans = [(job, end) for job, end, _ in result_windows if (job, end) not in done]
    assert orphans == []
    # drift windows with traffic all carry the same, complete set of rows
    drift_counts = Counter(n for job, end, n in result_windows if job == "drift")
    # 20 numeric features x (PSI, missing, KS, out of range) + channel x (PSI, missing, new
    # category) + prediction PSI, KS + the numeric features' multivariate drift (its effect
    # and mean error; the reference has no labels, so no performance estimate)
    assert set(drift_counts) == {20 * 4 + 3 + 2 + 2}, drift_counts
    workers = Counter(w for *_, w in runs)
    assert len(workers) >= 2, workers  # the work was shared
    print(f"windows per job: { {j: len(success[j]) for j in JOBS} }, runs by worker: "
          f"{dict(workers)}, killed at {killed_at.isoformat()}, records sent: {sent[0]}")
