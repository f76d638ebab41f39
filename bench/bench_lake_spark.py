"""The Spark part of bench/bench_lake.py: the adapter in ``local[2]`` against the single-node
path, per CPU-second of the whole process tree (this driver, Spark's JVM and its Python
workers), in each of its modes, and where the CPU goes (``--spark-split``).

Modes (each after a warm-up run that starts the JVM's code paths and the Python workers, best
of two):

- ``frame``: ``app.spark.job.fold_dataframe`` over ``spark.read.parquet`` (``mapInArrow``: Spark
  decodes the Parquet, turns it into rows and the rows into Arrow for the Python workers);
- ``files``: ``app.spark.files.fold_parquet`` (Spark hands out the files, the Python workers
  read them with pyarrow and fold them, as ``modelmon backfill`` does).

The split (``--spark-split``), each over the kernel's columns of the same dataset:

- ``scan``: Spark reads them and materialises every row (the ``noop`` sink): Parquet decoding
  and the columnar-to-row conversion;
- ``arrow``: the same handed to a ``mapInArrow`` that only counts the rows: plus rows to Arrow,
  the pipe to the Python workers and their reading of it;
- the mode ``frame`` above: plus the fold and the merge.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KINDS = ("driver", "jvm", "python")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def spark_session(batch_rows: int | None = None, conf: dict[str, str] | None = None) -> Any:
    """A SparkSession in local[2] mode (pyspark; a JDK from scripts/install-spark-deps.sh),
    its Python workers this interpreter."""
    if shutil.which("java") is None:
        raise SystemExit("--spark needs java: run scripts/install-spark-deps.sh as root")
    os.environ.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    from pyspark.sql import SparkSession

    loopback = {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}
    batches = ({} if batch_rows is None else
               {"spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows)})
    session = SparkSession.builder.master("local[2]").appName("bench-lake").config(map={
        **loopback, "spark.ui.enabled": "false", "spark.driver.memory": "2g",
        **batches, **(conf or {})}).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def tree_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process and every descendant, by kind: this
    process (the driver), Spark's JVM (started by it), and the Python workers (started by the
    JVM); a descendant's children that ended count through it (cutime + cstime)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, tail = text.rsplit(")", 1)
        fields = tail.split()
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        ticks[pid] = sum(int(x) for x in fields[11:15])
        names[pid] = head.split("(", 1)[1]
    me = os.getpid()
    out = dict.fromkeys(KINDS, 0.0)
    for pid, t in ticks.items():
        p = pid
        while p not in (0, 1, me) and p in parent:
            p = parent[p]
        if p != me:
            continue
        kind = "driver" if pid == me else "jvm" if names[pid] == "java" else "python"
        out[kind] += t / os.sysconf("SC_CLK_TCK")
    return out


def timed(fn: Callable[[], Any], runs: int = 2) -> tuple[float, dict[str, float]]:
    """(best wall s, CPU s by kind of the run with the least CPU) of ``runs`` runs, after a
    warm-up run."""
    fn()
    best: tuple[float, dict[str, float]] | None = None
    for _ in range(runs):
        w, c = time.perf_counter(), tree_cpu()
        fn()
        w = time.perf_counter() - w
        after = tree_cpu()
        used = {k: after[k] - c[k] for k in KINDS}
        if best is None or sum(used.values()) < sum(best[1].values()):
            best = (w, used)
    assert best is not None
    return best


def runs(session: Any, path: Path, doc: dict[str, Any], rows: int, modes: list[str],
         split: bool) -> dict[str, Callable[[], Any]]:
    """The runs to time, by name: the split's first, then each mode's."""
    from app.evaluation.fold import from_profile_document
    from app.spark.columns import kernel_frame
    from app.spark.files import fold_parquet
    from app.spark.job import fold_dataframe
    from app.storage.summaries import OUTCOME

    frame = session.read.parquet(str(path))

    def counted(folded: list[Any]) -> None:
        if sum(r.n for r in folded if r.kind == OUTCOME) != rows:
            raise SystemExit("Spark counted another number of predictions")

    def count_rows(batches: Iterator[Any]) -> Iterator[Any]:
        """Reads every batch and yields one row, the count (nested: pickled by value, this
        module is not on the workers' path)."""
        import pyarrow as pa

        n = 0
        for batch in batches:
            n += batch.num_rows
        yield pa.RecordBatch.from_pydict({"n": [n]})

    out: dict[str, Callable[[], Any]] = {}
    if split:
        kernel = kernel_frame(frame, None, from_profile_document(doc)[0], dedupe=False)
        out["scan"] = lambda: kernel.write.format("noop").mode("overwrite").save()
        out["arrow"] = lambda: kernel.mapInArrow(count_rows, "n long").collect()
    if "frame" in modes:
        out["frame"] = lambda: counted(fold_dataframe(doc, frame, dedupe=False))
    if "files" in modes:
        out["files"] = lambda: counted(fold_parquet(doc, session, str(path)))
    return out


def against_single_node(path: Path, rows: int, single: dict[str, Any], doc: dict[str, Any],
                        modes: list[str], *, split: bool = False,
                        batch_rows: int | None = None,
                        conf: dict[str, str] | None = None) -> dict[str, Any]:
    """Each run's CPU-seconds (driver, JVM and Python workers) against ``single`` (the
    single node's read + fold per file), and its wall time per core."""
    session = spark_session(batch_rows, conf)
    out: dict[str, Any] = {"conf": conf or {}, "batch_rows": batch_rows}
    try:
        for name, fn in runs(session, path, doc, rows, modes, split).items():
            w, used = timed(fn)
            c = sum(used.values())
            per_cpu, per_core = rows / c, rows / w / 2
            ratio = single["rows_per_cpu_s"] / per_cpu
            out[name] = {"wall_s": w, "cpu_s": c, **{f"{k}_cpu_s": used[k] for k in KINDS},
                         "rows_per_cpu_s": per_cpu, "rows_per_core_s": per_core,
                         "single_over_spark_per_cpu_s": ratio,
                         "single_over_spark_per_core_wall": single["rows_per_cpu_s"] / per_core,
                         "load": load()}
            shares = ", ".join(f"{k} {used[k]:.1f}" for k in KINDS)
            print(f"Spark local[2] {name}: {per_cpu:,.0f} rows/CPU-s ({c:.1f} CPU-s: {shares}),"
                  f" {rows / w:,.0f} rows/s wall = {per_core:,.0f} per core ({w:.2f} s); single "
                  f"node {single['rows_per_cpu_s']:,.0f} rows/CPU-s: {ratio:.2f}x Spark's per "
                  f"CPU-s (goal <= 2), {out[name]['single_over_spark_per_core_wall']:.2f}x per "
                  f"core of wall; load {load()}", flush=True)
    finally:
        session.stop()
    return out
