"""`modelmon worker` with its own /metrics, on Postgres after traffic with labels: promtool
accepts its scrape, and Prometheus started with the shipped configuration scrapes it as job
modelmon-worker. Every process the test starts is stopped by the test, by its process id."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import free_port, query, start_prometheus, stop_process, wait_for
from test_deploy_metrics import promtool_check_metrics

from app.settings import Settings
from tests.conftest import ROOT, create_pg_database, drop_pg_database
from tests.jobs_data import seed

JOBS = ("drift", "calibration", "cohorts", "labels")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _successes(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^modelmon_job_runs_total\{job_name="(\w+)",outcome="success"\} (\S+)$', text, re.M)}


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[dict]:
    db = create_pg_database("modelmon_worker")
    proc = None
    try:
        # one-second ticks over an hour's window: the first tick computes the seeded traffic
        seed(Settings(database_url=db, job_interval_seconds=1, job_window_seconds=3600))
        port = free_port()
        env = {**os.environ, "MODELMON_DATABASE_URL": db, "MODELMON_JOB_INTERVAL_SECONDS": "1",
               "MODELMON_JOB_WINDOW_SECONDS": "3600", "MODELMON_JOB_CATCHUP_WINDOWS": "1",
               "MODELMON_LOG_FORMAT": "json", "MODELMON_LOG_LEVEL": "info"}
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--metrics-port", str(port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def every_job_ran() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            done = _successes(_scrape(f"{url}/metrics"))
            return all(done.get(job, 0) >= 1 for job in JOBS)

        wait_for(every_job_ran, "a success of every job on the worker's /metrics", timeout=60)
        yield {"url": url, "address": f"127.0.0.1:{port}", "proc": proc, "log": log}
    finally:
        if proc is not None and proc.poll() is None:
            stop_process(proc)
        drop_pg_database(db)


def test_worker_metrics_pass_promtool_and_log_each_window(worker: dict, promtool: str) -> None:
    text = _scrape(f"{worker['url']}/metrics")
    for family in ("modelmon_job_duration_seconds_bucket{", "modelmon_scheduler_ticks_total{",
                   "modelmon_scheduler_last_tick_timestamp_seconds ", "process_cpu_seconds_total ",
                   "process_resident_memory_bytes ", "python_info{", "modelmon_build_info{"):
        assert family in text, family
    # the worker exports its own process's series, not the model-quality gauges (the API
    # replicas read those from the database)
    assert "modelmon_feature_psi" not in text
    promtool_check_metrics(promtool, text)
    assert json.loads(_scrape(f"{worker['url']}/healthz")) == {"status": "ok"}

    worker["proc"].send_signal(signal.SIGTERM)
    assert worker["proc"].wait(timeout=60) == 0
    lines = [json.loads(line) for line in worker["log"].read_text().splitlines()]
    windows = [x for x in lines if x.get("event") == "job_window" and x["outcome"] == "success"]
    assert {x["job_name"] for x in windows} == set(JOBS)
    drift = next(x for x in windows if x["job_name"] == "drift")
    assert drift["model"] == "credit" and drift["predictions"] == 400 and drift["results"] > 0
    labels = next(x for x in windows if x["job_name"] == "labels")
    assert labels["labeled"] == 300 and labels["duration_seconds"] >= 0
    ticks = [x for x in lines if x.get("event") == "tick"]
    assert ticks and ticks[0]["outcome"] == "success" and ticks[0]["windows"]["success"] >= 4
    assert any(x.get("event") == "shutdown" and x.get("outcome") == "clean" for x in lines)


def test_the_shipped_prometheus_config_scrapes_the_worker(worker: dict, tmp_path: Path,
                                                          monitoring_tools: dict) -> None:
    # no API replica and an Alertmanager nobody listens on: only the worker is scraped
    prom, proc = start_prometheus(tmp_path, [], f"http://127.0.0.1:{free_port()}",
                                  worker_targets=[worker["address"]])
    try:
        (up,) = wait_for(lambda: query(prom, 'up{job="modelmon-worker"} == 1'), "the scrape")
        assert up["metric"]["instance"] == worker["address"]
        runs = wait_for(lambda: query(
            prom, 'modelmon_job_runs_total{job="modelmon-worker", outcome="success"} > 0'),
            "job runs")
        assert {r["metric"]["job_name"] for r in runs} == set(JOBS)
        assert query(prom, 'process_cpu_seconds_total{job="modelmon-worker"}')
        # what the failure-rate alert and the on-call job panels read
        rates = wait_for(lambda: query(prom, 'sum by (job_name) (rate(modelmon_job_runs_total'
                                             '{job="modelmon-worker"}[1m]))'), "job run rates")
        assert {r["metric"]["job_name"] for r in rates} == set(JOBS)
    finally:
        stop_process(proc)
