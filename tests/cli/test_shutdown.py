"""SIGTERM while a job window is running, on Postgres, for `modelmon worker` and for the
scheduler inside `modelmon serve`: the process exits within the shutdown timeout although the
window cannot finish (another transaction holds a lock it needs), and nothing of that window
is stored (its results and its success row are one transaction, rolled back)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from app.settings import Settings
from app.storage.db import make_engine
from tests.conftest import ROOT, _psycopg_dsn, create_pg_database, drop_pg_database, free_port
from tests.deploy.deploy_support import wait_for
from tests.jobs_data import seed

TIMEOUT = 2  # MODELMON_SHUTDOWN_TIMEOUT_SECONDS


@pytest.fixture
def db() -> str:
    url = create_pg_database("modelmon_shutdown")
    yield url
    drop_pg_database(url)


def _blocked_insert(conn: psycopg.Connection) -> bool:
    """A job's insert into job_runs waits on the lock the test holds."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query ILIKE 'INSERT INTO job_runs%'").fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_sigterm_during_a_job_exits_within_the_bound_with_nothing_stored(
        db: str, tmp_path: Path, command: str) -> None:
    seed(Settings(database_url=db, job_interval_seconds=1, job_window_seconds=3600))
    env = {**os.environ, "MODELMON_DATABASE_URL": db, "MODELMON_JOB_INTERVAL_SECONDS": "1",
           "MODELMON_JOB_WINDOW_SECONDS": "3600", "MODELMON_JOB_CATCHUP_WINDOWS": "1",
           "MODELMON_SCHEDULER_ENABLED": "true", "MODELMON_LOG_FORMAT": "json",
           "MODELMON_SHUTDOWN_TIMEOUT_SECONDS": str(TIMEOUT),
           # the blocked statement would wait this long: far past the shutdown timeout
           "MODELMON_DB_STATEMENT_TIMEOUT_SECONDS": "600"}
    args = {"worker": ["worker", "--metrics-port", "0"],
            "serve": ["serve", "--no-migrate", "--port", str(free_port())]}[command]
    holder = psycopg.connect(_psycopg_dsn(db))
    log = tmp_path / f"{command}.log"
    proc = None
    try:
        # Reads go on; every insert into job_runs, so every window's success row, waits.
        holder.execute("LOCK TABLE job_runs IN EXCLUSIVE MODE")
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        with psycopg.connect(_psycopg_dsn(db), autocommit=True) as watcher:
            def job_blocked() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                return _blocked_insert(watcher)

            wait_for(job_blocked, "a job window waiting on the lock", timeout=60)
            proc.send_signal(signal.SIGTERM)
            # The window stays blocked for minutes (statement timeout 600 s) while the test
            # holds the lock: only the shutdown timeout can end the process now.
            code = proc.wait(timeout=60)
            assert code != 0  # abandoned, not finished
            # The server notices the client is gone once the statement gets its lock and
            # answers; then it aborts the transaction, which was never committed.
            holder.rollback()
            wait_for(lambda: not _blocked_insert(watcher) and watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'INSERT INTO job_runs%'"
                " AND state <> 'idle'").fetchone()[0] == 0, "the abandoned statement's end")
    finally:
        holder.rollback()
        holder.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    engine = make_engine(Settings(database_url=db))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM metric_results")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM job_runs")).scalar_one() == 0
    engine.dispose()
    lines = [json.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{")]
    (abandoned,) = [x for x in lines if x.get("event") == "shutdown"
                    and x.get("outcome") == "abandoned"]
    assert abandoned["level"] == "error" and f"{TIMEOUT} s" in abandoned["message"]
