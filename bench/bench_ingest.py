"""Ingest throughput: 1,000-record batches through the HTTP API into PostgreSQL, next to a
bare COPY and a bare idempotent COPY (staging table + INSERT ... ON CONFLICT DO NOTHING,
1,000 rows a transaction) of the same rows in the same run; one `modelmon serve` process and
`--workers 2`; open-loop latency at half the measured saturation; and, in-process, the decoders
compared on the same bodies (msgspec fast path, pydantic-core strict, orjson + validator).

    .venv/bin/python bench/bench_ingest.py [--batches 40] [--clients 1 2 4] [--workers 1 2]
        [--rounds 3]

After each API run, a label for each of its predictions (a minute later) goes through
POST /v1/labels in the same batches and clients: labels/s beside predictions/s, same run.

Each API run is followed at once by the two baselines on its own rows, and the ratio is taken
per round: the machines here are shared, and load that changes between a run and its baseline
would otherwise be read as a speed difference.

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


def upload_reference(client: httpx2.Client, n: int = 10_000) -> None:
    """A reference for v1, so every stored prediction is also counted in the drift bins and
    KS slots of its bucket summary (the ingest path a monitored model takes)."""
    rows = make_records(n, seed=12345)
    header = [f"f{j}" for j in range(N_NUMERIC)] + ["country", "score"]
    lines = [",".join(header)] + [
        ",".join([*(repr(r["features"][f"f{j}"]) for j in range(N_NUMERIC)),
                  r["features"]["country"], repr(r["prediction"]["score"])])
        for r in rows]
    r = client.post("/v1/models/bench/versions/v1/reference", content="\n".join(lines),
                    headers={"content-type": "text/csv"})
    if r.status_code != 201:
        raise SystemExit(f"reference upload failed: {r.status_code} {r.text[:200]}")


def start_server(url: str, port: int, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "MODELMON_DATABASE_URL": url, "MODELMON_LOG_LEVEL": "warning",
           "MODELMON_SCHEDULER_ENABLED": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                             "--workers", str(workers)], cwd=ROOT, env=env)
    return wait_ready(proc, port)


def wait_ready(proc: subprocess.Popen, port: int) -> subprocess.Popen:
    """``proc`` once its /readyz answers 200 (killed, and the run ended, after 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx2.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def label_bodies(records: list[dict]) -> list[bytes]:
    """A label for every record, a minute after its prediction, in the records' batches."""
    labels = [{"model": "bench", "prediction_id": r["prediction_id"],
               "label": "1" if r["prediction"]["score"] > 0.5 else "0",
               "timestamp": (datetime.fromisoformat(r["timestamp"])
                             + timedelta(minutes=1)).isoformat()} for r in records]
    return [json.dumps({"records": labels[i:i + BATCH]}).encode()
            for i in range(0, len(labels), BATCH)]


def api_run(port: int, bodies: list[bytes], clients: int, path: str = "/v1/predictions",
            counted: str = "accepted") -> float:
    """Seconds to post every body to ``path``, split over ``clients`` concurrent
    connections; each answer must count the whole batch under ``counted``."""
    errors: list[str] = []

    def worker(chunk: list[bytes]) -> None:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            for body in chunk:
                r = c.post(path, content=body, headers={"content-type": "application/json"})
                if r.status_code != 200 or r.json()[counted] != BATCH:
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
    """COPY the same rows, 1,000 per transaction, into a plain table shaped like a partition
    (emptied first, outside the timing)."""
    with psycopg.connect(dsn(url)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_copy (LIKE predictions INCLUDING ALL)")
        conn.execute("TRUNCATE bench_copy")
        conn.commit()
        cols = ", ".join(PREDICTION_COLUMNS)
        t = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            with conn.cursor() as cur, cur.copy(f"COPY bench_copy ({cols}) FROM STDIN") as cp:
                for row in rows[start:start + BATCH]:
                    cp.write_row(row)
            conn.commit()
        return time.perf_counter() - t


def idempotent_copy(url: str, rows: list[tuple]) -> float:
    """The same rows through a staging table and INSERT ... ON CONFLICT DO NOTHING into a
    table with the predictions' primary key (emptied first, outside the timing), 1,000 rows a
    transaction: what any idempotent ingest must at least do."""
    with psycopg.connect(dsn(url)) as conn:
        if not conn.execute("SELECT to_regclass('bench_idem')").fetchone()[0]:
            conn.execute("CREATE TABLE bench_idem (LIKE predictions INCLUDING DEFAULTS)")
            conn.execute("ALTER TABLE bench_idem ADD PRIMARY KEY (model_id, ts, prediction_id)")
        conn.execute("TRUNCATE bench_idem")
        conn.commit()
        cols = ", ".join(PREDICTION_COLUMNS)
        t = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS bench_stage "
                         "(LIKE bench_idem) ON COMMIT DELETE ROWS")
            with conn.cursor() as cur, cur.copy(f"COPY bench_stage ({cols}) FROM STDIN") as cp:
                for row in rows[start:start + BATCH]:
                    cp.write_row(row)
            conn.execute(f"INSERT INTO bench_idem ({cols}) SELECT {cols} FROM bench_stage "
                         "ON CONFLICT DO NOTHING")
            conn.commit()
        return time.perf_counter() - t


def open_loop(port: int, bodies: list[bytes], rate: float) -> tuple[float, float, int]:
    """Send one body every 1/rate seconds whatever the answers (open loop); latency counts
    from when a request was due. Returns (p50, p99, requests)."""
    from concurrent.futures import ThreadPoolExecutor

    latencies: list[float] = []
    errors: list[str] = []
    clients = threading.local()

    def send(due: float, body: bytes) -> None:
        c = getattr(clients, "c", None)
        if c is None:
            c = clients.c = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        r = c.post("/v1/predictions", content=body,
                   headers={"content-type": "application/json"})
        latencies.append(time.perf_counter() - due)
        if r.status_code != 200:
            errors.append(r.text[:200])

    start = time.perf_counter() + 0.2
    with ThreadPoolExecutor(max_workers=16) as pool:
        for i, body in enumerate(bodies):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            pool.submit(send, due, body)
    if errors:
        raise SystemExit(f"API errors: {errors[:3]}")
    lat = np.sort(np.array(latencies))
    return float(np.quantile(lat, 0.5)), float(np.quantile(lat, 0.99)), len(lat)


def decoders(bodies: list[bytes]) -> dict[str, float]:
    """Seconds to decode and type-check the same bodies in-process, three ways."""
    from pydantic import BaseModel, ConfigDict, StrictFloat, StrictStr

    from app.ingest import decode
    from app.ingest import validation as v
    from app.jsonvalues import parse_json
    from app.storage.registry import ModelRow

    features = [{"name": f"f{j}", "type": "numeric"} for j in range(N_NUMERIC)]
    features.append({"name": "country", "type": "categorical"})
    row = ModelRow(1, "bench", "binary_classification", features, ["region"], ["0", "1"],
                   datetime.now(UTC))
    schemas = {"bench": v.ModelSchema.build(row, {"v1": 1})}
    limits = v.Limits(now=datetime.now(UTC), max_future=timedelta(days=1),
                      max_past=timedelta(days=400), sum_tolerance=1e-3)

    class Strict(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")

    class Prediction(Strict):
        score: StrictFloat

    class Record(Strict):
        model: StrictStr
        version: StrictStr
        prediction_id: StrictStr
        timestamp: StrictStr
        features: dict[str, StrictFloat | StrictStr | None]
        prediction: Prediction
        cohorts: dict[str, StrictStr | None]
        latency_ms: StrictFloat | None = None

    class Batch(Strict):
        records: list[Record]

    out = {}
    t = time.perf_counter()
    cache: dict = {}
    for body in bodies:
        # the summaries' columns are built at first use (on another thread while the rows are
        # copied in); counted here, as they were when decoding built them
        assert decode.decode_predictions(body, lambda wanted: schemas, limits, 10_000,
                                         cache).columns
    out["msgspec fast path (decode + every check, rows and summary columns ready)"] = \
        time.perf_counter() - t
    t = time.perf_counter()
    for body in bodies:
        Batch.model_validate_json(body)
    out["pydantic-core strict (decode + generic types only)"] = time.perf_counter() - t
    t = time.perf_counter()
    for body in bodies:
        v.validate_predictions(parse_json(body)["records"], schemas, limits)
    out["orjson + complete validator (rows ready)"] = time.perf_counter() - t
    return out


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3,
                    help="API runs per setting, each followed by the baselines on its rows")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    args = ap.parse_args()

    name = f"modelmon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    total = args.batches * BATCH
    print(f"rows per run: {total} in batches of {BATCH}; {N_NUMERIC + 1} features per row; "
          f"{args.rounds} rounds per setting, each API run followed at once by a bare COPY and "
          f"a bare idempotent COPY of its rows (ratios per round, so that load which changes "
          f"during the run does not skew them); {load()}")
    ratios: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    labels: dict[tuple[int, int], list[tuple[float, float]]] = {}
    run = 0
    try:
        for workers in args.workers:
            port = 18000 + (os.getpid() + workers) % 1000
            proc = start_server(url, port, workers)
            try:
                if workers == args.workers[0]:
                    with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as c:
                        features = [{"name": f"f{j}", "type": "numeric"}
                                    for j in range(N_NUMERIC)]
                        features.append({"name": "country", "type": "categorical"})
                        c.post("/v1/models", json={
                            "name": "bench", "task": "binary_classification",
                            "features": features, "cohort_keys": ["region"]})
                        c.post("/v1/models/bench/versions", json={"version": "v1"})
                        upload_reference(c)
                for clients in args.clients:
                    for _ in range(args.rounds):
                        run += 1
                        records = make_records(total + BATCH * workers, seed=run)
                        for r in records:
                            r["prediction_id"] = f"run{run}-{r['prediction_id']}"
                        bodies = [json.dumps({"records": records[i:i + BATCH]}).encode()
                                  for i in range(0, len(records), BATCH)]
                        api_run(port, bodies[:workers], workers)  # warm-up: one batch each
                        api = total / api_run(port, bodies[workers:], clients)
                        rows = copy_rows(records[BATCH * workers:])
                        bare = total / bare_copy(url, rows)
                        idem = total / idempotent_copy(url, rows)
                        ratios.setdefault((workers, clients), []).append((api, bare, idem))
                        print(f"API, {workers} process(es), {clients} client(s): {api:9,.0f} "
                              f"rows/s; bare COPY {bare:9,.0f}; bare idempotent COPY "
                              f"{idem:9,.0f}; API / idempotent COPY {api / idem:.2f}   "
                              f"{load()}")
                        lab = total / api_run(port, label_bodies(records[BATCH * workers:]),
                                              clients, "/v1/labels", "matched")
                        labels.setdefault((workers, clients), []).append((lab, api))
                        print(f"labels, {workers} process(es), {clients} client(s): "
                              f"{lab:9,.0f} labels/s, each paired with its stored prediction; "
                              f"labels / predictions {lab / api:.2f}   {load()}")
                best = max(float(np.median([a for a, _, _ in rs]))
                           for (w, _), rs in ratios.items() if w == workers)
                target = 0.5 * best / BATCH  # requests per second
                n = max(10, int(target * args.latency_seconds))
                run += 1
                records = make_records(n * BATCH, seed=run)
                for r in records:
                    r["prediction_id"] = f"lat{workers}-{r['prediction_id']}"
                bodies = [json.dumps({"records": records[i:i + BATCH]}).encode()
                          for i in range(0, len(records), BATCH)]
                p50, p99, sent = open_loop(port, bodies, target)
                print(f"open loop, {workers} process(es), {target:.1f} batches/s (50% of "
                      f"{best:,.0f} rows/s), {sent} batches: p50 {p50 * 1000:.0f} ms, "
                      f"p99 {p99 * 1000:.0f} ms   {load()}")
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        bodies = [json.dumps({"records": make_records(BATCH, seed=1000 + i)}).encode()
                  for i in range(args.batches)]
        for label, secs in decoders(bodies).items():
            print(f"in-process, {label}: {secs / args.batches * 1000:6.2f} ms a batch")
        print("summary (median of the rounds; min-max of API / idempotent COPY):")
        for (workers, clients), rs in ratios.items():
            api, bare, idem = (float(np.median(x)) for x in zip(*rs, strict=True))
            per_round = [a / i for a, _, i in rs]
            print(f"  {workers} process(es), {clients} client(s): API {api:9,.0f} rows/s, "
                  f"bare COPY {bare:9,.0f}, bare idempotent COPY {idem:9,.0f}; "
                  f"API / idempotent COPY {float(np.median(per_round)):.2f} "
                  f"({min(per_round):.2f}-{max(per_round):.2f}), API / bare COPY "
                  f"{float(np.median([a / b for a, b, _ in rs])):.2f}")
        for (workers, clients), ls in labels.items():
            per_round = [lab / api for lab, api in ls]
            print(f"  labels, {workers} process(es), {clients} client(s): "
                  f"{float(np.median([lab for lab, _ in ls])):9,.0f} labels/s; labels / "
                  f"predictions {float(np.median(per_round)):.2f} "
                  f"({min(per_round):.2f}-{max(per_round):.2f})")
    finally:
        with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
