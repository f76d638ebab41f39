"""Summaries from the lake: what folding Parquet costs against reading it, per core, and what
the summaries of a model-day weigh.

    .venv/bin/python bench/bench_lake.py [--rows 2000000] [--dir /tmp/modelmon-bench-lake]
                                         [--keep] [--bucket-predictions 300000]
                                         [--backfill] [--spark] [--skip-kernel]
                                         [--workers 2] [--target-rows 100000000]
                                         [--spark-mode frame|files|both] [--spark-split]
                                         [--spark-conf KEY=VALUE] [--spark-batch-rows N]

Data: the same generator as bench/bench_jobs.py (f0..f19 numeric with 1% missing, c0/c1/c2
categorical, 5 of c2's 50 values unseen in the reference, cohort key "region", binary score,
half labeled), ``--rows`` predictions spread evenly over one hour, written once as a Parquet
dataset hive-partitioned by hour (snappy, 1M-row row groups) and reused across runs. The
reference profile is built from 10,000 reference rows as bench_jobs builds it.

Measured in this process, CPU time (user + system) and wall, each the best of three:

- **read floor**: pyarrow reading the needed columns of the dataset into one table;
- **fold**: ``app.evaluation.fold.fold`` of that table (the kernel every path uses), and
  ``fold.merge`` of its output (per-bucket rows added up), as rows/s per core;
- **read + fold** per fragment, as a backfill worker runs them;
- **bytes per model-day at 1,000 predictions/s**: an hour of 5-minute buckets of 300,000
  predictions (``--bucket-predictions``) folded and packed (outcome + drift), stored as a
  whole day (the hour repeated 24 times, each bucket shifted to its place) in a throwaway
  SQLite database by the service's own storage, then rolled up by the service's own roll-up
  (app/evaluation/rollup.py): the bytes of the payloads stored at 5 minutes, after the
  hourly roll-up and after the daily one.

Options, each on the same Parquet in the same run:

- ``--backfill``: ``modelmon backfill`` of the dataset end to end (a `modelmon serve` on a
  fresh SQLite file, the model registered with the reference, the CLI run as a subprocess
  with ``--workers``): wall time, rows/s end to end and once folding (the CLI's last
  progress line), and the extrapolation to ``--target-rows`` (100M; goal <= 10 minutes):
  the start-up (wall minus the rows at the folding rate) plus the target rows at the folding
  rate, and, more pessimistic, at the end-to-end rate. Every prediction must be counted
  once by the service.
- ``--spark``: the Spark adapter in ``local[2]`` over the dataset (bench/bench_lake_spark.py),
  in its DataFrame mode (``fold_dataframe``: ``mapInArrow``) and its file mode
  (``fold_parquet``), each the best of two runs after a warm-up, in rows per CPU-second of
  the driver, the JVM and the Python workers together, against the single-node path (read +
  fold per fragment, rows per CPU-s); goal: within 2x. Also rows/s per core (wall x 2 cores).
  ``--spark-split`` adds Spark's scan alone and its hand-over to Python alone;
  ``--spark-conf`` sets Spark settings. Needs pyspark and a JDK
  (scripts/install-spark-deps.sh).
- ``--skip-kernel``: leave out the in-process figures above (for a quick run of an option).

Prints the load average around every figure and last a ``RESULTS`` line (JSON). Machines here
are shared and noisy: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_jobs as bj  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

T0 = 1_764_000_000  # an hour boundary (epoch seconds)
BUCKET = 300.0
CHUNK = 500_000


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def best_of(fn: Any, k: int = 3) -> tuple[Any, float, float]:
    """(result, best CPU s, wall s of that run)."""
    best = (None, float("inf"), float("inf"))
    for _ in range(k):
        c, w = cpu(), time.perf_counter()
        out = fn()
        c, w = cpu() - c, time.perf_counter() - w
        if c < best[1]:
            best = (out, c, w)
    return best


MODEL = {"name": "lake", "task": "binary_classification",
         "features": [{"name": f, "type": "numeric"} for f in bj.NUMERIC]
         + [{"name": c, "type": "categorical"} for c in bj.CATEGORICAL],
         "cohort_keys": ["region"], "classes": ["good", "bad"]}


def profile_document() -> dict[str, Any]:
    """What GET .../versions/v1/profile would answer for the model with bench_jobs'
    reference: what a producer (the Spark adapter) folds with."""
    from app.evaluation.packing import FORMAT
    from app.evaluation.profiles import build_profile
    from app.storage.registry import ModelRow

    model = ModelRow(1, MODEL["name"], MODEL["task"], MODEL["features"], MODEL["cohort_keys"],
                     MODEL["classes"], datetime.now(UTC))
    ref, score = bj.reference_columns()
    profile = build_profile(model, ref, ("numeric", score), bj.N_REFERENCE)
    return {**MODEL, "model": MODEL["name"], "version": "v1", "format": FORMAT,
            "bucket_seconds": BUCKET, "profile_key": "bench", "profile": profile}


def model_and_profile() -> tuple[Any, Any]:
    from app.evaluation.fold import from_profile_document

    return from_profile_document(profile_document())


def table_of(n: int, offset: int, seed_key: int, span: float, t0: int = T0) -> pa.Table:
    """n rows (the bench_jobs generator), timestamps spread evenly over ``span`` seconds
    from ``t0``."""
    d = bj.generate(n, seed_key, current=True)
    names = bj.category_names(d["cats"])
    ts = t0 + (offset + np.arange(n) + d["u"]) * (span / max(n, 1))
    cols: dict[str, Any] = {
        "timestamp": pa.array((ts * 1e6).astype(np.int64), pa.timestamp("us", "UTC"))}
    for j, f in enumerate(bj.NUMERIC):
        cols[f] = pa.array(d["x"][:, j], from_pandas=True)
    for j, c in enumerate(bj.CATEGORICAL):
        cols[c] = pa.array(names[:, j].tolist(), pa.string())
    cols["region"] = pa.array(np.array(bj.REGIONS, dtype=object)[d["region"]].tolist())
    cols["score"] = pa.array(d["score"])
    label = np.where(d["y"], "bad", "good").astype(object)
    label[~d["labeled"]] = None
    cols["label"] = pa.array(label.tolist(), pa.string())
    cols["hour"] = pa.array(np.full(n, "h0"))
    return pa.table(cols)


def recent_hour() -> int:
    """The hour that began two hours ago: within the service's retention and its accepted
    time range, so that the dataset can also be backfilled."""
    return (int(time.time()) // 3600 - 2) * 3600


def write_dataset(path: Path, rows: int) -> int:
    """The dataset (kept from an earlier run while it is less than 20 days old); the epoch
    second its hour starts at."""
    if (path / "_done").exists():
        done = json.loads((path / "_done").read_text())
        if done["rows"] == rows and done.get("t0", 0) > time.time() - 20 * 86_400:
            return int(done["t0"])
    t0 = recent_hour()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for k, start in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - start)
        ds.write_dataset(table_of(n, start, 100 + k, 3600.0 * CHUNK / rows, t0), path,
                         format="parquet", partitioning=["hour"],
                         partitioning_flavor="hive", basename_template=f"part-{k}-{{i}}.parquet",
                         existing_data_behavior="overwrite_or_ignore",
                         max_rows_per_group=1_000_000)
    (path / "_done").write_text(json.dumps({"rows": rows, "t0": t0}))
    return t0


def columns(shape: Any) -> list[str]:
    return ["timestamp", *(f for f, _ in shape.features), "region", "score", "label"]


def measure(path: Path, rows: int, per_bucket: int) -> dict[str, Any]:
    from app.evaluation import fold

    shape, cp = model_and_profile()
    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    needed = columns(shape)
    out: dict[str, Any] = {"rows": rows, "load_before": load()}

    table, c, w = best_of(lambda: dataset.to_table(columns=needed))
    out["read"] = {"cpu_s": c, "wall_s": w, "rows_per_cpu_s": rows / c, "load": load()}
    print(f"read floor: {rows / c:,.0f} rows/CPU-s ({c:.2f} CPU-s, {w:.2f} s wall), "
          f"load {load()}", flush=True)

    folded, c, w = best_of(lambda: fold.fold(shape, table, 1, {1: cp}, BUCKET))
    out["fold"] = {"cpu_s": c, "wall_s": w, "rows_per_cpu_s": rows / c,
                   "us_per_row": c / rows * 1e6, "summary_rows": len(folded), "load": load()}
    print(f"fold: {rows / c:,.0f} rows/CPU-s = {c / rows * 1e6:.3f} us a prediction "
          f"({len(folded)} summary rows), load {load()}", flush=True)

    merged, c, w = best_of(lambda: fold.merge(folded))
    out["merge"] = {"cpu_s": c, "wall_s": w, "rows_in": len(folded), "rows_out": len(merged)}
    print(f"merge: {c:.3f} CPU-s for {len(folded)} rows", flush=True)

    out["read_and_fold"] = read_and_fold(path, rows)
    out["day_bytes"] = day_bytes(shape, cp, per_bucket)
    return out


def read_and_fold(path: Path, rows: int, k: int = 3) -> dict[str, Any]:
    """The single-node path: each fragment read and folded in turn, as a backfill worker
    does, in rows per CPU-s (best of ``k``)."""
    from app.evaluation import fold

    shape, cp = model_and_profile()
    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    needed = columns(shape)

    def per_fragment() -> int:
        n = 0
        for frag in dataset.get_fragments():
            t = frag.to_table(columns=needed, schema=dataset.schema)
            n += len(fold.fold(shape, t, 1, {1: cp}, BUCKET))
        return n

    _, c, w = best_of(per_fragment, k)
    print(f"read + fold per fragment: {rows / c:,.0f} rows/CPU-s "
          f"({c:.2f} CPU-s, {w:.2f} s wall), load {load()}", flush=True)
    return {"cpu_s": c, "wall_s": w, "rows_per_cpu_s": rows / c, "load": load()}


def rolled_day(hour: list[list[Any]]) -> dict[str, int]:
    """Payload bytes of a day of buckets (``hour`` repeated 24 times, shifted into place)
    stored in a throwaway SQLite database, as stored, after the service's hourly roll-up and
    after its daily one."""
    import tempfile
    import types

    from sqlalchemy import func, select

    from app.evaluation import rollup
    from app.settings import Settings
    from app.storage import migrate
    from app.storage import summaries as store
    from app.storage.db import make_engine
    from app.storage.tables import bucket_summaries as b

    day0 = datetime.fromtimestamp(T0 - T0 % 86_400, UTC)
    out: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/day.db", job_interval_seconds=BUCKET)
        engine = make_engine(settings)
        migrate.upgrade(engine)
        for h in range(24):
            with engine.begin() as conn:
                store.append(conn=conn, model_id=1, rows=[r._replace(
                    bucket_start=day0 + timedelta(hours=h, seconds=k * BUCKET))
                    for k, rows in enumerate(hour) for r in rows])

        def stored(key: str) -> None:
            with engine.connect() as conn:
                out[f"{key}_bytes"], out[f"{key}_rows"] = conn.execute(
                    select(func.sum(func.length(b.c.payload)), func.count())).one()

        stored("day_5min")
        model = types.SimpleNamespace(id=1, name="bench", policy=None)
        (_, hourly_age), (_, daily_age) = rollup.levels(settings, 0.0)
        for key, age in (("day_hourly", hourly_age), ("day_daily", daily_age)):
            rollup.rollup(engine, model, settings,
                          day0 + timedelta(days=1, seconds=age, hours=1), 10**6)
            stored(key)
        engine.dispose()
    return out


def day_bytes(shape: Any, cp: Any, per_bucket: int) -> dict[str, Any]:
    """Summary bytes of a model-day at 1,000 predictions/s (``per_bucket`` predictions a
    5-minute bucket): per bucket as folded, and the day as stored before and after the
    service's roll-ups."""
    from app.evaluation import fold

    hour = [fold.fold(shape, table_of(per_bucket, 0, 900 + k, BUCKET).set_column(
        0, "timestamp", pa.array(np.full(per_bucket, int((T0 + k * BUCKET) * 1e6)),
                                 pa.timestamp("us", "UTC"))), 1, {1: cp}, BUCKET)
            for k in range(12)]
    mean_bucket = float(np.mean([sum(len(r.payload) for r in rows) for rows in hour]))
    out = {"predictions_per_bucket": per_bucket, "bucket_bytes_mean": mean_bucket,
           **rolled_day(hour), "load": load()}
    print(f"model-day at {per_bucket / BUCKET:,.0f}/s: {out['day_5min_bytes'] / 1e6:.1f} MB "
          f"in {out['day_5min_rows']} rows of 5-minute buckets ({mean_bucket / 1e3:.0f} kB "
          f"a bucket), {out['day_hourly_bytes'] / 1e6:.1f} MB in {out['day_hourly_rows']} "
          f"rows rolled up hourly, {out['day_daily_bytes'] / 1e6:.2f} MB in "
          f"{out['day_daily_rows']} rows rolled up daily, load {load()}", flush=True)
    return out


def serve(database: Path) -> tuple[Any, str]:
    """`modelmon serve` on a fresh SQLite file, with the model, its version v1 and the
    reference registered; (the process, its URL)."""
    import csv
    import io
    import socket

    import httpx2
    from bench_ingest import start_server

    database.unlink(missing_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_server(f"sqlite:///{database}", port)
    url = f"http://127.0.0.1:{port}"
    ref, score = bj.reference_columns()
    text = io.StringIO()
    out = csv.writer(text)
    out.writerow([*ref, "score"])
    for i in range(bj.N_REFERENCE):
        out.writerow([*("" if v is None or v != v else v for v in (c[i] for c in ref.values())),
                      score[i]])
    with httpx2.Client(base_url=url, timeout=120) as client:
        for path, body in (("/v1/models", MODEL), ("/v1/models/lake/versions", {"version": "v1"})):
            r = client.post(path, json=body)
            if r.status_code != 201:
                proc.kill()
                raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")
        r = client.post("/v1/models/lake/versions/v1/reference", content=text.getvalue(),
                        headers={"content-type": "text/csv"})
        if r.status_code != 201:
            proc.kill()
            raise SystemExit(f"reference upload failed: {r.status_code} {r.text[:300]}")
    return proc, url


def backfill(path: Path, rows: int, folder: Path, workers: int, target: int) -> dict[str, Any]:
    """`modelmon backfill` of the dataset into a fresh service, end to end (the CLI started,
    files surveyed, folded in ``workers`` processes, uploaded, and the service's answers):
    wall time, rows/s, and the wall time of ``target`` rows at that rate."""
    import re
    import subprocess

    proc, url = serve(folder / "bench-lake.db")
    try:
        load_before = load()
        w = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "app.cli", "backfill", str(path),
                              "--model", "lake", "--version", "v1", "--url", url,
                              "--workers", str(workers)], cwd=ROOT, capture_output=True,
                             text=True)
        w = time.perf_counter() - w
    finally:
        proc.terminate()
        proc.wait(30)
    counted = re.search(r"(\d+) predictions counted", run.stdout)
    # its last progress line: rows/s from the first file's fold on (after the start-up and
    # the survey of the dataset)
    steady = re.findall(r"([\d,]+) rows/s, ETA", run.stderr)
    if run.returncode != 0 or counted is None or int(counted.group(1)) != rows or not steady:
        raise SystemExit(f"the backfill failed or miscounted (exit {run.returncode}):\n"
                         f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    rate, folding = rows / w, float(steady[-1].replace(",", ""))
    fixed = max(w - rows / folding, 0.0)
    minutes = (fixed + target / folding) / 60
    out = {"rows": rows, "workers": workers, "wall_s": w, "rows_per_s": rate,
           "folding_rows_per_s": folding, "fixed_s": fixed, "target_rows": target,
           "target_wall_min": minutes, "target_wall_min_end_to_end_rate": target / rate / 60,
           "load_before": load_before, "load": load()}
    print(f"modelmon backfill: {rows:,} rows in {w:.1f} s wall = {rate:,.0f} rows/s end to "
          f"end, {folding:,.0f} rows/s once folding ({workers} workers, {fixed:.1f} s "
          f"start-up); {target:,} rows: {minutes:.1f} min (start-up + rows at the folding "
          f"rate; {target / rate / 60:.1f} min at the end-to-end rate; goal <= 10), "
          f"load {load()}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/modelmon-bench-lake"))
    ap.add_argument("--keep", action="store_true", help="keep the dataset for the next run")
    ap.add_argument("--bucket-predictions", type=int, default=300_000,
                    help="predictions a 5-minute bucket of the model-day (1,000/s: 300,000)")
    ap.add_argument("--backfill", action="store_true",
                    help="also time `modelmon backfill` of the dataset end to end")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="--workers of the backfill (default: the machine's cores)")
    ap.add_argument("--target-rows", type=int, default=100_000_000,
                    help="rows the backfill's rate is extrapolated to (default 100M)")
    ap.add_argument("--spark", action="store_true",
                    help="also time the Spark adapter in local[2] against the single node")
    ap.add_argument("--spark-mode", choices=("frame", "files", "both"), default="both",
                    help="the adapter's mode timed: the DataFrame's mapInArrow (frame), the "
                         "file mode (files), or both (default)")
    ap.add_argument("--spark-split", action="store_true",
                    help="also time Spark's scan alone and its hand-over to Python alone "
                         "(where the frame mode's CPU goes)")
    ap.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a Spark setting for the session (repeatable), e.g. "
                         "spark.sql.parquet.columnarReaderBatchSize=8192")
    ap.add_argument("--spark-batch-rows", type=int, default=None,
                    help="spark.sql.execution.arrow.maxRecordsPerBatch (Spark's default: "
                         "10,000): the rows of each Arrow batch Spark hands the kernel")
    ap.add_argument("--skip-kernel", action="store_true",
                    help="leave out the in-process read, fold, merge and bytes figures")
    args = ap.parse_args()
    path = args.dir / f"rows={args.rows}"
    print(f"writing {args.rows:,} rows to {path} (once), load {load()}", flush=True)
    write_dataset(path, args.rows)
    results: dict[str, Any] = {"rows": args.rows}
    try:
        if not args.skip_kernel:
            results = measure(path, args.rows, args.bucket_predictions)
        if args.backfill:
            results["backfill"] = backfill(path, args.rows, args.dir, args.workers,
                                           args.target_rows)
        if args.spark:
            from bench_lake_spark import against_single_node

            single = results.get("read_and_fold") or read_and_fold(path, args.rows)
            modes = ["frame", "files"] if args.spark_mode == "both" else [args.spark_mode]
            conf = dict(item.split("=", 1) for item in args.spark_conf)
            results["spark"] = against_single_node(
                path, args.rows, single, profile_document(), modes, split=args.spark_split,
                batch_rows=args.spark_batch_rows, conf=conf)
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
