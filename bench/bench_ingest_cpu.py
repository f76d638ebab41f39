"""Where a prediction batch's CPU goes: Python and PostgreSQL, per 1,000-record batch.

    .venv/bin/python bench/bench_ingest_cpu.py [--batches 100] [--profile 25] [--phases] [--http]

In-process (no HTTP): the service's own ``ingest_predictions`` on the same bodies as
bench/bench_ingest.py (a model with a 10,000-row reference, so each batch is also counted in
its drift bins and KS slots). Python CPU from ``time.process_time``; PostgreSQL CPU from the
backends' /proc counters (utime + stime of every backend of the throwaway database), so the
figures hold on a busy machine better than wall time does. With ``--profile N``, the N
functions of the ingest call with the most own time (cProfile, a separate pass). With
``--phases``, the wall time of each step of the ingest call (decode, the writer's round trips
and COPYs, summaries, metrics; the rest is the transaction's begin and commit), a separate
pass on new keys; indented steps are parts of another, or run on another thread. With
``--http``, the same bodies are then posted to a `modelmon serve` process (one client, one
request at a time; with ``--threads T``, T clients) and its CPU per batch is read from /proc
as well: what HTTP adds. With ``--threads T`` the in-process pass is also run from T threads.

Needs PostgreSQL (MODELMON_TEST_DATABASE_URL or postgres@127.0.0.1:5432) on this machine (the
/proc counters); creates and drops a throwaway database. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx2  # noqa: E402
from bench_ingest import (  # noqa: E402
    BATCH,
    admin_url,
    dsn,
    make_records,
    start_server,
    upload_reference,
)

from app.ingest import service  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.storage import migrate  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(admin: str, db: str) -> float:
    """CPU seconds used so far by the backends connected to ``db``."""
    with psycopg.connect(admin, autocommit=True) as c:
        pids = [p for (p,) in c.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (db,))]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def over_http(url: str, admin: str, db: str, bodies: list[bytes], clients: int) -> None:
    port = 19000 + os.getpid() % 1000
    proc = start_server(url, port)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            def post(body: bytes) -> None:
                r = c.post("/v1/predictions", content=body,
                           headers={"content-type": "application/json"})
                assert r.status_code == 200 and r.json()["accepted"] == BATCH, r.text[:200]
            for body in bodies[:5]:
                post(body)
            s0, pg0, c0 = process_cpu(proc.pid), backend_cpu(admin, db), time.process_time()
            t0 = time.perf_counter()
            if clients == 1:
                for body in bodies[5:]:
                    post(body)
            else:  # one connection per client thread
                def send(part: list[bytes]) -> None:
                    with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as own:
                        for body in part:
                            r = own.post("/v1/predictions", content=body,
                                         headers={"content-type": "application/json"})
                            assert r.status_code == 200, r.text[:200]
                rest = bodies[5:]
                with ThreadPoolExecutor(clients) as pool:
                    list(pool.map(send, [rest[i::clients] for i in range(clients)]))
            wall = time.perf_counter() - t0
            n = len(bodies) - 5
            server, pg = process_cpu(proc.pid) - s0, backend_cpu(admin, db) - pg0
            client = time.process_time() - c0
        print(f"HTTP, {n} batches, {clients} client(s): server {1000 * server / n:.2f} ms, "
              f"PostgreSQL {1000 * pg / n:.2f} ms, client {1000 * client / n:.2f} ms CPU per "
              f"batch; wall {1000 * wall / n:.2f} ms per batch ({n * BATCH / wall:,.0f} rows/s)")
    finally:
        proc.terminate()
        proc.wait(30)


PHASES = (  # (module, attribute, label): each wrapped in a wall-clock timer by --phases
    ("app.ingest.decode", "decode_predictions", "decode + checks"),
    ("app.storage.partitions", "PartitionManager.ensure_days", "partitions"),
    ("app.evaluation.profiles", "ProfileCache.recent", "profiles"),
    ("app.ingest.writer", "_pg_write_predictions", "write (lock, pending count, COPYs)"),
    ("app.ingest.writer", "_copy_direct", "  of which the two COPYs"),
    ("app.ingest.slo", "add", "SLO counters"),
    ("app.ingest.service", "Ahead.result", "waiting for the summaries and metrics"),
    ("app.ingest.service", "_append_summaries", "summaries stored"),
    ("app.observability.metrics", "ServiceMetrics.count_predictions", "metrics counted"),
    # on another thread while the rows are copied in, when they are copied straight:
    ("app.ingest.decode", "_columns", "  (summaries' columns built)"),
    ("app.ingest.summarize", "for_predictions", "  (summaries computed, columns included)"),
    ("app.ingest.service", "predictions_stored", "  (metrics tallied)"),
)


def timed_phases() -> dict[str, float]:
    """Wrap each of PHASES in a timer; the returned totals (seconds) grow as they run."""
    import importlib
    totals: dict[str, float] = {}
    for module, attr, label in PHASES:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
        totals[label] = 0.0

        def wrapped(*a: Any, _fn: Any = fn, _label: str = label, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                totals[_label] += time.perf_counter() - t
        setattr(owner, name, wrapped)
    return totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--phases", action="store_true")
    ap.add_argument("--http", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="also ingest the bodies again from this many threads at once")
    args = ap.parse_args()
    admin = admin_url()
    db = f"modelmon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(admin), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    url = make_url(admin).set(database=db).render_as_string(hide_password=False)
    try:
        settings = Settings(database_url=url, scheduler_enabled=False)
        engine = create_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        app = create_app(settings, run_scheduler=False)
        with TestClient(app) as client:
            r = client.post("/v1/models", json={
                "name": "bench", "task": "binary_classification",
                "features": [{"name": f"f{j}", "type": "numeric"} for j in range(10)]
                + [{"name": "country", "type": "categorical"}],
                "cohort_keys": ["region"]})
            assert r.status_code == 201, r.text
            r = client.post("/v1/models/bench/versions", json={"version": "v1"})
            assert r.status_code == 201, r.text
            upload_reference(client)
            records = make_records(BATCH * (args.batches + 5))
            bodies = [json.dumps({"records": records[i:i + BATCH]}).encode()
                      for i in range(0, len(records), BATCH)]
            st = app.state

            def ingest(body: bytes) -> None:
                res = service.ingest_predictions(
                    engine=st.engine, partitions=st.partitions, settings=st.settings,
                    body=body, profiles=st.profiles, schema_cache=st.schemas)
                st.metrics.count_predictions(res)  # as the API does
                assert res.accepted == BATCH, res

            for body in bodies[:5]:  # warm: caches, partitions, connections
                ingest(body)
            if args.threads > 1:  # the same bodies again, under new keys, from T threads
                again = [{**rec, "prediction_id": f"t-{rec['prediction_id']}"}
                         for rec in records[BATCH * 5:]]
                parts = [json.dumps({"records": again[i:i + BATCH]}).encode()
                         for i in range(0, len(again), BATCH)]
                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    list(pool.map(ingest, parts))
                wall = time.perf_counter() - t0
                print(f"{len(parts)} batches from {args.threads} threads: wall "
                      f"{1000 * wall / len(parts):.2f} ms per batch "
                      f"({len(parts) * BATCH / wall:,.0f} rows/s)")
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            pg0, py0, t0 = backend_cpu(dsn(admin), db), time.process_time(), time.perf_counter()
            for body in bodies[5:]:
                ingest(body)
            wall = time.perf_counter() - t0
            py, pg = time.process_time() - py0, backend_cpu(dsn(admin), db) - pg0
            n = args.batches
            print(f"{n} batches of {BATCH}: Python {1000 * py / n:.2f} ms, PostgreSQL "
                  f"{1000 * pg / n:.2f} ms CPU per batch; wall {1000 * wall / n:.2f} ms per "
                  f"batch ({n * BATCH / wall:,.0f} rows/s, one thread)")
            if args.profile:
                fresh = [{**rec, "prediction_id": f"p-{rec['prediction_id']}"}
                         for rec in records[:BATCH * n]]  # keys not stored yet
                more = [json.dumps({"records": fresh[i:i + BATCH]}).encode()
                        for i in range(0, BATCH * n, BATCH)]
                prof = cProfile.Profile()
                prof.enable()
                for body in more:
                    ingest(body)
                prof.disable()
                print(f"\nown time per batch, top {args.profile} (cProfile, {n} batches):")
                stats = pstats.Stats(prof)
                rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:args.profile]
                for (file, line, fn), (_, calls, tottime, _, _) in rows:
                    where = f"{Path(file).name}:{line}" if line else file
                    print(f"  {1000 * tottime / n:7.3f} ms  {calls / n:9.1f} calls  {fn}  "
                          f"({where})")
            if args.phases:
                fresh = [{**rec, "prediction_id": f"w-{rec['prediction_id']}"}
                         for rec in records[:BATCH * n]]  # keys not stored yet
                more = [json.dumps({"records": fresh[i:i + BATCH]}).encode()
                        for i in range(0, BATCH * n, BATCH)]
                totals = timed_phases()
                t0 = time.perf_counter()
                for body in more:
                    ingest(body)
                wall = time.perf_counter() - t0
                print(f"\nwall time per batch by step ({n} batches, load average "
                      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
                for label, seconds in totals.items():
                    print(f"  {1000 * seconds / n:7.3f} ms  {label}")
                inner = {label: s for label, s in totals.items() if not label.startswith(" ")}
                print(f"  {1000 * (wall - sum(inner.values())) / n:7.3f} ms  the rest "
                      f"(transaction begin and commit, service glue)")
                print(f"  {1000 * wall / n:7.3f} ms  in all")
        if args.http:
            fresh = [{**rec, "prediction_id": f"h-{rec['prediction_id']}"} for rec in records]
            over_http(url, dsn(admin), db, [json.dumps({"records": fresh[i:i + BATCH]}).encode()
                                            for i in range(0, len(fresh), BATCH)],
                      max(args.threads, 1))
    finally:
        with psycopg.connect(dsn(admin), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
