"""The summarizing kernel alone, in CPU time: a large batch and a live ingest batch.

    .venv/bin/python bench/bench_fold.py [--rows 2000000] [--dir /tmp/modelmon-bench-lake]
                                         [--rounds 3] [--small 100] [--repeat 200]
                                         [--checkout PATH]

- **fold**: ``app.evaluation.fold.fold`` of bench/bench_lake.py's dataset (the same Parquet,
  written once under ``--dir`` and kept: 20 numeric and 3 categorical features, a cohort
  key, a binary score, half labeled, ``--rows`` predictions over one hour, so 12 buckets of
  5 minutes), in microseconds of CPU (user + system) per prediction, best of ``--rounds``;
- **live batch**: a batch of ``--small`` predictions within one bucket (what one ingest
  request folds), ``summary_rows`` on the columns ingest builds and ``fold`` of the same
  rows as Arrow, in microseconds of CPU per batch (``--repeat`` batches a round, best of
  5 rounds).

Prints one JSON line with the load average. ``--checkout``: measure the ``app`` of another
checkout (say, main's worktree) with this script, to compare two in alternation, one run at
a time (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_lake as bl  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402


def best_cpu(fn: Any, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/modelmon-bench-lake"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--checkout", type=Path, default=ROOT)
    args = ap.parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))
    from app.evaluation import fold

    path = args.dir / f"rows={args.rows}"
    bl.write_dataset(path, args.rows)
    shape, cp = bl.model_and_profile()
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table(
        columns=bl.columns(shape))
    out: dict[str, Any] = {"checkout": fold.__file__.rsplit("/app/", 1)[0], "rows": args.rows,
                           "load_before": os.getloadavg()[0]}

    def big() -> None:
        fold.fold(shape, table, 1, {1: cp}, bl.BUCKET)

    big()  # builds what the profile builds on a first large batch
    out["fold_us_per_prediction"] = round(best_cpu(big, args.rounds) / args.rows * 1e6, 3)

    small = bl.table_of(args.small, 0, 77, 10.0)  # 10 seconds: one bucket
    rows = fold.rows_from_arrow(shape, small, 1)

    def live_rows() -> None:
        for _ in range(args.repeat):
            fold.summary_rows(shape, rows, bl.BUCKET, count_predictions=True,
                              profiles={1: cp})

    def live_arrow() -> None:
        for _ in range(args.repeat):
            fold.fold(shape, small, 1, {1: cp}, bl.BUCKET)

    live_rows()
    out[f"summary_rows_{args.small}_us_per_batch"] = round(
        best_cpu(live_rows, 5) / args.repeat * 1e6, 1)
    out[f"fold_arrow_{args.small}_us_per_batch"] = round(
        best_cpu(live_arrow, 5) / args.repeat * 1e6, 1)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
