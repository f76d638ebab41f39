"""Summaries from the lake: what folding Parquet costs against reading it, per core, and what
the summaries of a model-day weigh.

    .venv/bin/python bench/bench_lake.py [--rows 2000000] [--dir /tmp/modelmon-bench-lake]
                                         [--keep] [--bucket-predictions 300000]

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


def model_and_profile() -> tuple[Any, Any]:
    from app.evaluation.profiles import build_profile
    from app.evaluation.summaries import CompiledProfile, ModelShape
    from app.storage.registry import ModelRow

    feats = [{"name": f, "type": "numeric"} for f in bj.NUMERIC]
    feats += [{"name": c, "type": "categorical"} for c in bj.CATEGORICAL]
    model = ModelRow(1, "lake", "binary_classification", feats, ["region"], ["good", "bad"],
                     datetime.now(UTC))
    ref, score = bj.reference_columns()
    profile = build_profile(model, ref, ("numeric", score), bj.N_REFERENCE)
    return ModelShape.of(model), CompiledProfile.compile(profile, "bench")


def table_of(n: int, offset: int, seed_key: int, span: float) -> pa.Table:
    """n rows (the bench_jobs generator), timestamps spread evenly over ``span`` seconds."""
    d = bj.generate(n, seed_key, current=True)
    names = bj.category_names(d["cats"])
    ts = T0 + (offset + np.arange(n) + d["u"]) * (span / max(n, 1))
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


def write_dataset(path: Path, rows: int) -> None:
    if (path / "_done").exists() and json.loads((path / "_done").read_text())["rows"] == rows:
        return
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for k, start in enumerate(range(0, rows, CHUNK)):
        n = min(CHUNK, rows - start)
        ds.write_dataset(table_of(n, start, 100 + k, 3600.0 * CHUNK / rows), path,
                         format="parquet", partitioning=["hour"],
                         partitioning_flavor="hive", basename_template=f"part-{k}-{{i}}.parquet",
                         existing_data_behavior="overwrite_or_ignore",
                         max_rows_per_group=1_000_000)
    (path / "_done").write_text(json.dumps({"rows": rows}))


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

    def per_fragment() -> int:
        n = 0
        for frag in dataset.get_fragments():
            t = frag.to_table(columns=needed, schema=dataset.schema)
            n += len(fold.fold(shape, t, 1, {1: cp}, BUCKET))
        return n

    _, c, w = best_of(per_fragment)
    out["read_and_fold"] = {"cpu_s": c, "wall_s": w, "rows_per_cpu_s": rows / c,
                            "load": load()}
    print(f"read + fold per fragment: {rows / c:,.0f} rows/CPU-s "
          f"({c:.2f} CPU-s, {w:.2f} s wall), load {load()}", flush=True)
    out["day_bytes"] = day_bytes(shape, cp, per_bucket)
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/modelmon-bench-lake"))
    ap.add_argument("--keep", action="store_true", help="keep the dataset for the next run")
    ap.add_argument("--bucket-predictions", type=int, default=300_000,
                    help="predictions a 5-minute bucket of the model-day (1,000/s: 300,000)")
    args = ap.parse_args()
    path = args.dir / f"rows={args.rows}"
    print(f"writing {args.rows:,} rows to {path} (once), load {load()}", flush=True)
    write_dataset(path, args.rows)
    try:
        results = measure(path, args.rows, args.bucket_predictions)
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
