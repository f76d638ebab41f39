"""Summaries from the lake: what folding Parquet costs against reading it, per core, and what
the summaries of a model-day weigh.

    .venv/bin/python bench/bench_lake.py [--rows 2000000] [--dir /tmp/modelmon-bench-lake]
                                         [--keep]

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
- **bytes per model-day at 1,000 predictions/s**: one 5-minute bucket of 300,000 predictions
  folded and packed (outcome + drift), times 288 buckets, and the same hour merged into one
  hourly bucket (the arithmetic of a roll-up: exact addition), times 24.

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
from datetime import UTC, datetime
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


def measure(path: Path, rows: int) -> dict[str, Any]:
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
    out["day_bytes"] = day_bytes(shape, cp)
    return out


def day_bytes(shape: Any, cp: Any) -> dict[str, Any]:
    """Summary bytes of a model-day at 1,000 predictions/s: per 5-minute bucket, and per
    hour once merged (a roll-up's exact addition)."""
    from app.evaluation import fold

    per_bucket = 300_000
    hour = [fold.fold(shape, table_of(per_bucket, 0, 900 + k, BUCKET).set_column(
        0, "timestamp", pa.array(np.full(per_bucket, int((T0 + k * BUCKET) * 1e6)),
                                 pa.timestamp("us", "UTC"))), 1, {1: cp}, BUCKET)
            for k in range(12)]
    bucket_bytes = [sum(len(r.payload) for r in rows) for rows in hour]
    hourly = fold.merge([r._replace(bucket_start=datetime.fromtimestamp(T0, UTC))
                         for rows in hour for r in rows])
    hour_bytes = sum(len(r.payload) for r in hourly)
    mean_bucket = float(np.mean(bucket_bytes))
    out = {"predictions_per_bucket": per_bucket, "bucket_bytes_mean": mean_bucket,
           "day_bytes_5min": mean_bucket * 288, "hour_bytes": hour_bytes,
           "day_bytes_hourly": hour_bytes * 24, "load": load()}
    print(f"model-day at 1,000/s: {mean_bucket * 288 / 1e6:.1f} MB in 5-minute buckets "
          f"({mean_bucket / 1e3:.0f} kB each), {hour_bytes * 24 / 1e6:.1f} MB merged hourly "
          f"({hour_bytes / 1e3:.0f} kB an hour), load {load()}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/modelmon-bench-lake"))
    ap.add_argument("--keep", action="store_true", help="keep the dataset for the next run")
    args = ap.parse_args()
    path = args.dir / f"rows={args.rows}"
    print(f"writing {args.rows:,} rows to {path} (once), load {load()}", flush=True)
    write_dataset(path, args.rows)
    try:
        results = measure(path, args.rows)
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
