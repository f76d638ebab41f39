"""The Python client: what ``Monitor.log`` costs the caller, and how many records a second
one monitor delivers end to end into a real `modelmon serve` on PostgreSQL.

    .venv/bin/python bench/bench_client.py [--calls 200000] [--records 200000]

1. Caller overhead: ``log`` timed call by call (perf_counter_ns) for a record of 10 numeric
   features, a categorical one, a score, a cohort and a latency, while the sender thread
   is posting to the server in the same process (its GIL share is part of the cost).
   Two ways: back to back, and paced at 5,000 calls/s (a busy model server).
2. End to end: the same records logged back to back, then ``flush``; records/s from the
   first call to the flush's return, checked against the rows counted in the database.

Needs PostgreSQL (MODELMON_TEST_DATABASE_URL or postgres@127.0.0.1:5432); creates and drops a
throwaway database. Prints figures with the load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx2
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "client" / "src")]

from bench_ingest import admin_url, dsn, start_server  # noqa: E402
from modelmon_client import Monitor  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

N_NUMERIC, CATEGORIES = 10, ["DE", "FR", "US", "BR", "IN", "JP"]


def load() -> str:
    """`uptime`'s load average, printed next to every figure (the cores are shared)."""
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    return "load average " + out.rsplit("load average:", 1)[-1].strip()


def other_benchmarks() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "bench/bench_"], capture_output=True, text=True)
    mine = {str(os.getpid()), str(os.getppid())}  # this script, and a `timeout` around it
    return [line for line in out.stdout.splitlines() if line.split()[0] not in mine]


def rows(n: int) -> list[tuple[dict, float, dict]]:
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, N_NUMERIC)).round(6).tolist()
    cats = rng.integers(0, len(CATEGORIES), size=n).tolist()
    scores = rng.random(n).tolist()
    return [({**{f"f{j}": x[i][j] for j in range(N_NUMERIC)}, "country": CATEGORIES[cats[i]]},
             scores[i], {"region": "eu" if cats[i] < 2 else "other"}) for i in range(n)]


def percentiles(ns: list[int]) -> str:
    ns = sorted(ns)
    def q(p: float) -> float:
        return ns[min(len(ns) - 1, int(p * len(ns)))] / 1000
    over = sum(1 for v in ns if v > 50_000)
    return (f"p50 {q(0.5):.1f} µs, p90 {q(0.9):.1f}, p99 {q(0.99):.1f}, p99.9 {q(0.999):.1f}, "
            f"max {ns[-1] / 1000:.0f} µs; {over} of {len(ns)} calls over 50 µs")


def caller_overhead(url: str, data: list, paced: float | None) -> tuple[str, object]:
    timings = []
    with Monitor(url, model="bench", version="v1", max_queue=len(data) + 1) as monitor:
        period = 1.0 / paced if paced else 0.0
        next_at = time.perf_counter()
        for features, score, cohorts in data:
            if paced:
                next_at += period
                while time.perf_counter() < next_at:
                    pass
            t0 = time.perf_counter_ns()
            monitor.log(features=features, prediction={"score": score}, cohorts=cohorts,
                        latency_ms=3.5)
            timings.append(time.perf_counter_ns() - t0)
        monitor.flush()
        stats = monitor.stats
    return percentiles(timings), stats


def end_to_end(url: str, data: list) -> tuple[float, object]:
    with Monitor(url, model="bench", version="v2", max_queue=len(data) + 1) as monitor:
        t0 = time.perf_counter()
        for features, score, cohorts in data:
            monitor.log(features=features, prediction={"score": score}, cohorts=cohorts,
                        latency_ms=3.5)
        monitor.flush()
        elapsed = time.perf_counter() - t0
        stats = monitor.stats
    return len(data) / elapsed, stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--paced-calls", type=int, default=50_000)
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    if others := other_benchmarks():
        print("warning: other benchmarks are running:", *others, sep="\n  ")
    name = f"modelmon_bench_client_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    port = 18000 + os.getpid() % 1000
    proc = start_server(url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        httpx2.post(f"{base}/v1/models", json={
            "name": "bench", "task": "binary_classification",
            "features": [*({"name": f"f{j}", "type": "numeric"} for j in range(N_NUMERIC)),
                         {"name": "country", "type": "categorical"}],
            "cohort_keys": ["region"]}).raise_for_status()
        for v in ("v1", "v2", "v3"):
            httpx2.post(f"{base}/v1/models/bench/versions", json={"version": v}
                        ).raise_for_status()
        data = rows(max(args.calls, args.records))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {load()}")

        figures, stats = caller_overhead(base, data[:args.calls], None)
        print(f"log(), back to back, {args.calls} calls: {figures}; sent {stats.sent}, "
              f"dropped {stats.dropped}; {load()}")
        figures, stats = caller_overhead(base, data[:args.paced_calls], 5000)
        print(f"log(), paced at 5,000/s, {args.paced_calls} calls: {figures}; "
              f"sent {stats.sent}; {load()}")

        rate, stats = end_to_end(base, data[:args.records])
        with psycopg.connect(dsn(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM predictions p JOIN model_versions v "
                                  "ON v.id = p.version_id WHERE v.version = 'v2'"
                                  ).fetchone()[0]
        print(f"end to end, {args.records} records logged then flushed: {rate:,.0f} records/s "
              f"(sent {stats.sent}, stored {stored}, retried {stats.retried}); {load()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
