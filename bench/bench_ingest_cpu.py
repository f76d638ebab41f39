"""Where a prediction batch's CPU goes: Python and PostgreSQL, per 1,000-record batch.

    .venv/bin/python bench/bench_ingest_cpu.py [--batches 100] [--profile 25]

In-process (no HTTP): the service's own ``ingest_predictions`` on the same bodies as
bench/bench_ingest.py (a model with a 10,000-row reference, so each batch is also counted in
its drift bins and KS slots). Python CPU from ``time.process_time``; PostgreSQL CPU from the
backends' /proc counters (utime + stime of every backend of the throwaway database), so the
figures hold on a busy machine better than wall time does. With ``--profile N``, the N
functions of the ingest call with the most own time (cProfile, a separate pass).

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
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH, admin_url, dsn, make_records, upload_reference  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
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
                    body=body, profiles=st.profiles, schema_cache=st.schemas,
                    metrics=st.metrics)
                assert res.accepted == BATCH, res

            for body in bodies[:5]:  # warm: caches, partitions, connections
                ingest(body)
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
    finally:
        with psycopg.connect(dsn(admin), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
