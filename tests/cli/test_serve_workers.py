"""`modelmon serve --workers 2`: two processes behind one port on one Postgres; whichever
answers a scrape, /metrics adds up the counters of both."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from tests.conftest import ROOT, free_port, own_pg_database
from tests.factories import iso
from tests.helpers import wait_ready


@pytest.fixture
def workers_db():
    with own_pg_database("modelmon_workers") as url:
        yield url


def accepted(text: str) -> float:
    m = re.search(r'^modelmon_ingested_records_total\{model="m",outcome="accepted"\} (\S+)$',
                  text, flags=re.M)
    return float(m.group(1)) if m else 0.0


def test_two_worker_processes_share_one_port_and_one_metrics_view(workers_db, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELMON_DATABASE_URL": workers_db, "MODELMON_LOG_LEVEL": "warning",
           "MODELMON_SCHEDULER_ENABLED": "false",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_999.db").write_bytes(b"left over from an earlier run")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                             "--workers", "2"], cwd=ROOT, env=env)
    try:
        wait_ready(url, proc)
        assert httpx2.post(f"{url}/v1/models", json={
            "name": "m", "task": "regression",
            "features": [{"name": "x", "type": "numeric"}]}).status_code == 201
        assert httpx2.post(f"{url}/v1/models/m/versions",
                           json={"version": "v1"}).status_code == 201
        for b in range(20):  # a new connection per request: the kernel spreads them
            records = [{"model": "m", "version": "v1", "prediction_id": f"{b}-{i}",
                        "timestamp": iso(time_now()), "features": {"x": float(i)},
                        "prediction": {"value": 1.0}} for i in range(10)]
            r = httpx2.post(f"{url}/v1/predictions", json={"records": records})
            assert r.status_code == 200 and r.json()["accepted"] == 10
        for _ in range(12):
            text = httpx2.get(f"{url}/metrics").text
            assert accepted(text) == 200.0
        assert len(children_of(proc.pid)) >= 2
        # process figures of both processes, whichever answers: memory summed over them,
        # one series per family (no per-process label)
        for family in ("process_resident_memory_bytes", "process_virtual_memory_bytes",
                       "process_open_fds", "process_start_time_seconds"):
            (value,) = re.findall(rf"^{family} (\S+)$", text, flags=re.M)
            assert float(value) > 0, family
        rss = float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1))
        one = [int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
               for pid in children_of(proc.pid)]
        assert rss > max(one)  # more than any single process: the sum of the live ones
        assert re.search(r"^process_cpu_seconds_total \S+$", text, re.M)
        assert re.search(r"^python_info\{", text, re.M)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def time_now():
    from datetime import UTC, datetime
    return datetime.now(UTC)


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc, no tool needed)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out
