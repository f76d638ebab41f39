"""Ingest throughput: 1,000-record batches through the HTTP API into PostgreSQL, next to a
bare COPY of the same rows in the same run (the floor no API can beat).

    .venv/bin/python bench/bench_ingest.py [--batches 40] [--clients 1 2]

Needs PostgreSQL (MODELMON_TEST_DATABASE_URL or postgres@127.0.0.1:5432); creates and drops a
throwaway database. Prints figures; asserts nothing. Machines here are shared and noisy:
compare the ratio, not the absolute numbers, across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import numpy as np
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.ingest.writer import PREDICTION_COLUMNS  # noqa: E402

N_NUMERIC, CATEGORIES = 10, ["DE", "FR", "US", "BR", "IN", "JP"]
BATCH = 1000


def admin_url() -> str:
    return os.environ.get("MODELMON_TEST_DATABASE_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_records(n: int, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_NUMERIC)).round(6)
    cats = rng.integers(0, len(CATEGORIES), size=n)
    scores = rng.random(n).round(6)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    return [
        {
            "model": "bench", "version": "v1", "prediction_id": f"r-{i}",
            "timestamp": (t0 + timedelta(milliseconds=i)).isoformat(),
            "features": {**{f"f{j}": float(x[i, j]) for j in range(N_NUMERIC)},
                         "country": CATEGORIES[cats[i]]},
            "prediction": {"score": float(scores[i])},
            "cohorts": {"region": "eu" if cats[i] < 2 else "other"},
            "latency_ms": 3.5,
        }
        for i in range(n)
    ]


def start_server(url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "MODELMON_DATABASE_URL": url, "MODELMON_LOG_LEVEL": "warning",
           "MODELMON_SCHEDULER_ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx2.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def api_run(port: int, bodies: list[bytes], clients: int) -> float:
    """Seconds to post every body, split over ``clients`` concurrent connections."""
    errors: list[str] = []

    def worker(chunk: list[bytes]) -> None:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            for body in chunk:
                r = c.post("/v1/predictions", content=body,
                           headers={"content-type": "application/json"})
                if r.status_code != 200 or r.json()["accepted"] != BATCH:
                    errors.append(r.text[:200])

    threads = [threading.Thread(target=worker, args=(bodies[i::clients],)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise SystemExit(f"API errors: {errors[:3]}")
    return elapsed


def copy_rows(records: list[dict]) -> list[tuple]:
    """The rows the API stores for these records, as the bare-COPY baseline writes them."""
    now = datetime.now(UTC)
    return [
        (1, datetime.fromisoformat(r["timestamp"]), r["prediction_id"], 1, now,
         json.dumps(r["features"]), json.dumps(r["cohorts"]), r["prediction"]["score"], None,
         None, None, r["latency_ms"])
        for r in records
    ]


def bare_copy(url: str, rows: list[tuple]) -> float:
    """COPY the same rows, 1,000 per transaction, into a plain table shaped like a partition."""
    with psycopg.connect(dsn(url)) as conn:
        conn.execute("CREATE TABLE bench_copy (LIKE predictions INCLUDING ALL)")
        conn.commit()
        cols = ", ".join(PREDICTION_COLUMNS)
        t = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            with conn.cursor() as cur, cur.copy(f"COPY bench_copy ({cols}) FROM STDIN") as cp:
                for row in rows[start:start + BATCH]:
                    cp.write_row(row)
            conn.commit()
        return time.perf_counter() - t


def cpu_breakdown(bodies: list[bytes]) -> tuple[float, float]:
    """Seconds spent parsing and validating the same bodies, without HTTP or a database."""
    from app.api.body import parse_json
    from app.ingest import validation as v
    from app.storage.registry import ModelRow

    features = [{"name": f"f{j}", "type": "numeric"} for j in range(N_NUMERIC)]
    features.append({"name": "country", "type": "categorical"})
    row = ModelRow(1, "bench", "binary_classification", features, ["region"], ["0", "1"],
                   datetime.now(UTC))
    schemas = {"bench": v.ModelSchema.build(row, {"v1": 1})}
    limits = v.Limits(now=datetime.now(UTC), max_future=timedelta(days=1),
                      max_past=timedelta(days=400), sum_tolerance=1e-3)
    t = time.perf_counter()
    parsed = [parse_json(b) for b in bodies]
    parse_s = time.perf_counter() - t
    t = time.perf_counter()
    for body in parsed:
        v.validate_predictions(body["records"], schemas, limits)
    return parse_s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    name = f"modelmon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    port = 18000 + os.getpid() % 1000
    proc = start_server(url, port)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as c:
            features = [{"name": f"f{j}", "type": "numeric"} for j in range(N_NUMERIC)]
            features.append({"name": "country", "type": "categorical"})
            c.post("/v1/models", json={"name": "bench", "task": "binary_classification",
                                       "features": features, "cohort_keys": ["region"]})
            c.post("/v1/models/bench/versions", json={"version": "v1"})
        total = args.batches * BATCH
        print(f"rows per run: {total} in batches of {BATCH}; {N_NUMERIC + 1} features per row")
        results = {}
        offset = 0
        for clients in args.clients:
            records = make_records(total + BATCH, seed=clients)
            for r in records:
                r["prediction_id"] = f"c{clients}-{r['prediction_id']}"
            bodies = [json.dumps({"records": records[i:i + BATCH]}).encode()
                      for i in range(0, len(records), BATCH)]
            api_run(port, bodies[:1], 1)  # warm-up batch
            elapsed = api_run(port, bodies[1:], clients)
            results[clients] = total / elapsed
            offset += total
            print(f"API, {clients} client(s): {elapsed:7.2f} s  {total / elapsed:10,.0f} rows/s")
        parse_s, validate_s = cpu_breakdown(bodies[1:])
        print(f"  of which JSON parse (in-process, no HTTP/DB): {parse_s:5.2f} s, "
              f"validation: {validate_s:5.2f} s")
        base = bare_copy(url, copy_rows(make_records(total, seed=99)))
        print(f"bare COPY, same rows:  {base:7.2f} s  {total / base:10,.0f} rows/s")
        for clients, rate in results.items():
            print(f"API/COPY ratio, {clients} client(s): {rate / (total / base):.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
