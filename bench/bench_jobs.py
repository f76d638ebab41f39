"""Window jobs on per-bucket summaries: fill one hour with N predictions through the ingest
write and summary steps, then time one scheduler tick (summary upkeep + the four window jobs)
in a fresh child process, so that its CPU time and peak memory are its own.

    .venv/bin/python bench/bench_jobs.py [--sizes 10000,100000,1000000,10000000] [--peers]
                                         [--keep]

Per size, in a throwaway PostgreSQL database (MODELMON_TEST_DATABASE_URL or
postgres@127.0.0.1:5432): one binary model (f0..f19 numeric, c0/c1/c2 categorical with 5, 20
and 50 values, 5 of c2's unseen in the reference, cohort key "region" with 8 values), one
version with a 10,000-row reference profile; f0, f1 and f2 shifted by 0.3 sd in the current
window, 1% missing values. N predictions over one clock-aligned hour that ended 3 hours ago
go through ``write_predictions`` + ``slo.add`` + ``summarize.for_predictions`` +
``summaries.append`` (the steps of ``app.ingest.service.ingest_predictions``, in batches of
10,000, no HTTP; rows laid out as ``validate_predictions`` lays them out); half of
them are then labeled through ``write_labels`` + ``summarize.for_pairs``, labels in arrival
order (prediction time + 1..3600 s). ANALYZE runs after the predictions and after the labels,
where autovacuum would have run on a server that has it on.

A first child loads the reference profile (timed apart, once per process), times
``maintain_summaries`` (the first upkeep compacts the fill's partial rows: the first bucket
alone, as a live tick meets it, then the other 11), the four jobs via ``run_window`` (each must
return "success" and the stored results must count every prediction and label), then deletes
the job runs and results and runs the upkeep and the four jobs again: that second run is the
steady-state tick. A second, fresh child does the same steady-state tick in a process that
has compacted nothing (its memory is the tick's alone). Peak memory is the child's ``VmHWM``,
reset before each step (``/proc/self/clear_refs``), so each step's peak is its own; the
process peak is reported too (not ``ru_maxrss``, which keeps the peak of the parent image the
child was exec'd from). CPU is the child's (user + system); the database server's work shows
only in wall time.

``--peers`` (at 1,000,000 rows): the same current rows and reference through Evidently's
DataDriftPreset and whylogs profiles + drift scores, each in its own child process of a
throwaway venv (/tmp/modelmon-bench-peers, created on first use; not a project dependency).

Prints figures and the load average around every measurement, and last a ``RESULTS`` line
with every figure as JSON; asserts only that the jobs measured what they claim. Machines here
are shared and noisy: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 10_000
N_REFERENCE = 10_000
SEED = 20261125
N_NUMERIC = 20
SHIFTED = (0, 1, 2)
SHIFT_SD = 0.3
MISSING = 0.01
LABELED = 0.5
C0 = [f"a{i}" for i in range(5)]
C1 = [f"b{i:02d}" for i in range(20)]
C2 = [f"k{i:02d}" for i in range(50)]
C2_REFERENCE = 45  # the reference holds the first 45 values of c2; current traffic all 50
REGIONS = [f"r{i}" for i in range(8)]
NUMERIC = [f"f{j}" for j in range(N_NUMERIC)]
CATEGORICAL = ["c0", "c1", "c2"]
INTERVAL, WINDOW = 300, 3600
JOBS = ("drift", "calibration", "cohorts", "labels")
PEER_VENV = Path("/tmp/modelmon-bench-peers")
# pandas 3 removed a helper evidently 0.7.23 imports; whylogs' drift scores live in its viz extra
PEER_PACKAGES = ["evidently==0.7.23", "whylogs[viz]==1.6.4", "pandas<3", "pyarrow"]
OLD = {10_000: (1.2, 190), 100_000: (11.7, 559), 1_000_000: (157.0, 4300)}  # s, MB


# --------------------------------------------------------------------------- process figures


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (1e6 bytes)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS, so the next reading is the peak of what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measured(fn: Any) -> tuple[Any, dict[str, Any]]:
    """Run fn(); its wall and CPU seconds, peak RSS (VmHWM since a reset) and load."""
    reset_peak()
    before = {"load_before": load(), "rss_before_mb": status_mb("VmRSS")}
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return out, {**before, "wall": wall, "cpu": cpu, "peak_mb": status_mb("VmHWM"),
                 "load_after": load()}


# --------------------------------------------------------------------------- synthetic data


def generate(m: int, key: int, *, current: bool, seed: int = SEED) -> dict[str, Any]:
    """m rows of columns, deterministic per (seed, key). Reference rows: current=False."""
    import numpy as np

    rng = np.random.default_rng([seed, key, int(current)])
    x = rng.normal(size=(m, N_NUMERIC))
    if current:
        x[:, list(SHIFTED)] += SHIFT_SD
    logit = 1.2 * x[:, 4] - 0.8 * x[:, 5] + 0.5 * x[:, 0] - 1.0 + 0.5 * rng.normal(size=m)
    score = np.round(1.0 / (1.0 + np.exp(-logit)), 6)
    x = np.round(x, 6)
    x[rng.random(x.shape) < MISSING] = np.nan
    p1 = 1.0 / np.arange(1, 21)
    n2 = len(C2) if current else C2_REFERENCE
    p2 = 1.0 / np.arange(1, n2 + 1) ** 0.7
    cats = np.stack([rng.integers(0, len(C0), m), rng.choice(20, m, p=p1 / p1.sum()),
                     rng.choice(n2, m, p=p2 / p2.sum())], axis=1)
    cats[rng.random(cats.shape) < MISSING] = -1
    region = rng.integers(0, len(REGIONS), m)
    y = rng.random(m) < score
    wrong = region == len(REGIONS) - 1  # one region where the model is a coin flip
    y[wrong] = rng.random(int(wrong.sum())) < 0.5
    return {"x": x, "cats": cats, "region": region, "score": score, "y": y,
            "labeled": rng.random(m) < LABELED, "delay": rng.uniform(1, 3600, m),
            "latency": np.round(rng.gamma(2.0, 4.0, m), 3), "u": rng.random(m)}


def batch_sizes(n: int) -> list[int]:
    return [min(BATCH, n - i) for i in range(0, n, BATCH)]


def category_names(cats: Any) -> list[list[str | None]]:
    import numpy as np

    out = np.empty(cats.shape, dtype=object)
    for j, names in enumerate((C0, C1, C2)):
        lookup = np.array([*names, None], dtype=object)
        out[:, j] = lookup[cats[:, j]]  # -1 picks the trailing None
    return out


def reference_columns() -> tuple[dict[str, Any], Any]:
    import numpy as np

    d = generate(N_REFERENCE, 0, current=False, seed=SEED + 1)
    cols: dict[str, Any] = {name: d["x"][:, j].copy() for j, name in enumerate(NUMERIC)}
    names = category_names(d["cats"])
    for j, name in enumerate(CATEGORICAL):
        cols[name] = np.array(names[:, j], dtype=object)
    return cols, d["score"]


def current_columns(n: int) -> tuple[dict[str, Any], Any]:
    """The first n current rows (as the fill generates them), as columns."""
    import numpy as np

    parts = [generate(m, b, current=True) for b, m in enumerate(batch_sizes(n))]
    x = np.concatenate([p["x"] for p in parts])
    names = category_names(np.concatenate([p["cats"] for p in parts]))
    cols: dict[str, Any] = {name: x[:, j] for j, name in enumerate(NUMERIC)}
    for j, name in enumerate(CATEGORICAL):
        cols[name] = np.array(names[:, j], dtype=object)
    return cols, np.concatenate([p["score"] for p in parts])


def stage_rows(d: dict[str, Any], i0: int, n: int, start: float, model_id: int,
               version_id: int, received_at: datetime,
               with_parsed: bool, named: Any = None) -> tuple[list[tuple], list[float]]:
    """Rows in writer.STAGE_COLUMNS layout for global rows i0.., and their epoch times; with
    ``with_parsed``, each row also carries its parsed (features, cohorts, probabilities), as
    validate_predictions' rows do when the writer has N_STAGE. With ``named`` (the module of
    named rows, app.ingest.rows, in trees that have it), PredictionRows, and their Parsed
    values in a list beside them: (rows, parsed), times."""
    import numpy as np
    import orjson

    m = d["x"].shape[0]
    ts = start + (np.arange(i0, i0 + m) + d["u"]) * (WINDOW / n)
    ts = np.minimum(ts, start + WINDOW - 1e-3)
    x = d["x"].astype(object)
    x[np.isnan(d["x"])] = None
    values = np.concatenate([x, category_names(d["cats"])], axis=1).tolist()
    names = NUMERIC + CATEGORICAL
    cohorts = [{"region": r} for r in REGIONS]
    cohorts_json = [orjson.dumps(c).decode() for c in cohorts]
    rows = []
    for k, (t, v, r, s, lat) in enumerate(zip(ts.tolist(), values, d["region"].tolist(),
                                              d["score"].tolist(), d["latency"].tolist(),
                                              strict=True)):
        features = dict(zip(names, v, strict=True))
        row = (model_id, datetime.fromtimestamp(t, UTC), f"p{i0 + k:09d}", version_id,
               received_at, orjson.dumps(features).decode(), cohorts_json[r], s, None, None,
               None, lat, None, None)
        if with_parsed:
            row = (*row, (features, cohorts[r], None))
        elif named is not None:
            row = (named.PredictionRow._make(row), named.Parsed(features, cohorts[r], None, 0))
        rows.append(row)
    if named is not None:
        return ([r for r, _ in rows], [p for _, p in rows]), ts.tolist()
    return rows, ts.tolist()


# --------------------------------------------------------------------------- database


def admin_url() -> str:
    return os.environ.get("MODELMON_TEST_DATABASE_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database() -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"modelmon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url()).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(dsn(admin_url()), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def model_definition() -> dict[str, Any]:
    features = [{"name": n, "type": "numeric"} for n in NUMERIC]
    features += [{"name": n, "type": "categorical"} for n in CATEGORICAL]
    return {"name": "bench", "task": "binary_classification", "features": features,
            "cohort_keys": ["region"], "classes": ["good", "bad"]}


def summary_stats(engine: Any, start: datetime, end: datetime) -> dict[str, Any]:
    from sqlalchemy import text

    q = text("SELECT kind, count(*), coalesce(sum(octet_length(payload)), 0), "
             "count(DISTINCT bucket_start) FROM bucket_summaries "
             "WHERE bucket_start >= :s AND bucket_start < :e GROUP BY kind")
    with engine.connect() as conn:
        rows = {k: (int(c), int(b), int(nb)) for k, c, b, nb in
                conn.execute(q, {"s": start, "e": end})}
    buckets = max((v[2] for v in rows.values()), default=0)
    total_bytes = sum(v[1] for v in rows.values())
    return {"rows": sum(v[0] for v in rows.values()), "bytes": total_bytes,
            "buckets": buckets, "bytes_per_bucket": total_bytes / buckets if buckets else 0,
            "by_kind": {k: {"rows": v[0], "bytes": v[1]} for k, v in rows.items()}}


# --------------------------------------------------------------------------- fill


def analyze(engine: Any) -> float:
    """ANALYZE, as autovacuum would have by then on a server that runs it (the test server
    runs with autovacuum off), so that the fill's queries are planned on statistics."""
    from sqlalchemy import text

    t = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - t


def fill(url: str, n: int, window_end: datetime) -> dict[str, Any]:
    import numpy as np

    from app.evaluation.profiles import ProfileCache, build_profile
    from app.evaluation.summaries import ModelShape
    from app.ingest import slo, summarize, writer
    from app.ingest.validation import ModelSchema
    from app.ingest.writer import write_labels, write_predictions
    from app.settings import Settings
    from app.storage import migrate, registry
    from app.storage import profiles as profile_store
    from app.storage import summaries as summary_store
    from app.storage.db import make_engine
    from app.storage.partitions import PartitionManager

    settings = Settings(database_url=url, job_interval_seconds=INTERVAL,
                        job_window_seconds=WINDOW, scheduler_enabled=False)
    engine = make_engine(settings)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        model, _ = registry.create_model(conn=conn, definition=model_definition())
        version, _ = registry.create_version(conn=conn, model_id=model.id, version="v1",
                                             created_at=None, metadata={})
    cols, ref_scores = reference_columns()
    profile = build_profile(model, cols, ("numeric", ref_scores), N_REFERENCE, n_bins=10,
                            sample_size=10_000)
    with engine.begin() as conn:
        profile_store.put_profile(conn=conn, model_id=model.id, version_id=version.id,
                                  source="upload", n_rows=N_REFERENCE, profile=profile)

    start = window_end - timedelta(seconds=WINDOW)
    PartitionManager(engine).ensure_days({start.date(), (window_end - timedelta(
        microseconds=1)).date()})
    shapes = {model.id: ModelShape.of(model)}
    schemas = {model.id: ModelSchema.build(model, {"v1": version.id})}
    cache = ProfileCache()
    bucket = settings.job_interval_seconds
    # Rows as validate_predictions builds them in this tree: newer writers (N_STAGE) take
    # rows that also carry their parsed values, so that summarizing need not parse JSON.
    with_parsed = hasattr(writer, "N_STAGE")
    try:  # named rows, their parsed values beside them
        from app.ingest import rows as named
    except ImportError:
        named = None

    out: dict[str, Any] = {"n": n, "with_parsed": with_parsed, "load_before_fill": load()}
    gen_s = store_s = sum_wall = sum_cpu = 0.0
    label_idx, label_ts, label_y = [], [], []
    t_all = time.perf_counter()
    done = 0
    next_report = 0.1
    for b, m in enumerate(batch_sizes(n)):
        t = time.perf_counter()
        d = generate(m, b, current=True)
        rows, ts = stage_rows(d, b * BATCH, n, start.timestamp(), model.id, version.id,
                              datetime.now(UTC), with_parsed, named)
        parsed = None
        if named is not None:
            rows, parsed = rows
        lab = np.flatnonzero(d["labeled"])
        label_idx.append(lab + b * BATCH)
        label_ts.append(np.asarray(ts)[lab] + d["delay"][lab])
        label_y.append(d["y"][lab])
        t1 = time.perf_counter()
        gen_s += t1 - t
        with engine.connect() as conn:
            compiled = cache.get(conn, {version.id})
        with engine.begin() as conn:
            result = write_predictions(conn, rows)
            slo.add(conn, schemas, slo.pairs_for_new_predictions(result.new_rows,
                                                                  result.waiting_labels))
            c0, w0 = time.process_time(), time.perf_counter()
            if hasattr(summarize, "columns_of_rows"):  # columns, then the stored ones
                columns = (summarize.columns_of_rows(shapes, rows) if parsed is None
                           else summarize.columns_of_rows(shapes, rows, parsed))
                summary_rows = summarize.for_predictions(
                    shapes, rows, columns,
                    result.duplicate_keys, result.waiting_labels, compiled, bucket)
            else:
                summary_rows = summarize.for_predictions(shapes, result.new_rows,
                                                         result.waiting_labels, compiled,
                                                         bucket)
            sum_wall += time.perf_counter() - w0
            sum_cpu += time.process_time() - c0
            for model_id, srows in sorted(summary_rows.items()):
                summary_store.append(conn=conn, model_id=model_id, rows=srows)
        assert result.accepted == m, (result.accepted, m)
        store_s += time.perf_counter() - t1
        done += m
        if done >= next_report * n and n >= 1_000_000:
            print(f"    fill {done:>11,} / {n:,}  {done / store_s:8,.0f} rows/s stored  "
                  f"load {load()}", flush=True)
            next_report += 0.1
    out.update(fill_wall=time.perf_counter() - t_all, fill_gen_s=gen_s, fill_store_s=store_s,
               summarize_us=sum_wall / n * 1e6, summarize_cpu_us=sum_cpu / n * 1e6,
               load_after_fill=load(), analyze_s=analyze(engine))

    # Labels for half the rows, in arrival order (prediction time + delay).
    idx = np.concatenate(label_idx)
    lts = np.concatenate(label_ts)
    ly = np.concatenate(label_y)
    order = np.argsort(lts, kind="stable")
    idx, lts, ly = idx[order], lts[order], ly[order]
    del label_idx, label_ts, label_y, order
    n_labels = int(idx.shape[0])
    gen_s = store_s = sum_wall = sum_cpu = 0.0
    out["load_before_labels"] = load()
    t_all = time.perf_counter()
    matched = 0
    next_report = 0.1
    for s in range(0, n_labels, BATCH):
        t = time.perf_counter()
        label_row = named.LabelRow if named is not None else (lambda *r: r)
        label_rows = [label_row(model.id, f"p{i:09d}", "bad" if y else "good", None,
                                datetime.fromtimestamp(e, UTC))
                      for i, e, y in zip(idx[s:s + BATCH].tolist(), lts[s:s + BATCH].tolist(),
                                         ly[s:s + BATCH].tolist(), strict=True)]
        t1 = time.perf_counter()
        gen_s += t1 - t
        with engine.begin() as conn:
            result = write_labels(conn, label_rows, 0)
            slo.add(conn, schemas, slo.pairs_for_new_labels(result.pairs))
            c0, w0 = time.process_time(), time.perf_counter()
            summary_rows = summarize.for_pairs(shapes, result.pairs, bucket)
            sum_wall += time.perf_counter() - w0
            sum_cpu += time.process_time() - c0
            for model_id, srows in sorted(summary_rows.items()):
                summary_store.append(conn=conn, model_id=model_id, rows=srows)
        matched += result.matched
        store_s += time.perf_counter() - t1
        if s + BATCH >= next_report * n_labels and n_labels >= 500_000:
            print(f"    labels {min(s + BATCH, n_labels):>11,} / {n_labels:,}  "
                  f"{min(s + BATCH, n_labels) / store_s:8,.0f} labels/s stored  "
                  f"load {load()}", flush=True)
            next_report += 0.1
    assert matched == n_labels, (matched, n_labels)
    out.update(n_labels=n_labels, labels_wall=time.perf_counter() - t_all,
               labels_gen_s=gen_s, labels_store_s=store_s,
               summarize_label_us=sum_wall / n_labels * 1e6,
               summarize_label_cpu_us=sum_cpu / n_labels * 1e6, load_after_labels=load(),
               before_compaction=summary_stats(engine, start, window_end))
    out["analyze_s"] += analyze(engine)
    engine.dispose()
    return out


# --------------------------------------------------------------------------- tick (child)


def child_tick(url: str, window_end_iso: str, n: int, n_labels: int, mode: str) -> None:
    """Runs in its own process: prints one JSON line with every figure. Mode "first": the
    first upkeep (compaction), the four jobs, then (results deleted) upkeep and jobs again.
    Mode "fresh": results deleted, then upkeep and the four jobs in a process that has done
    nothing else (its peak memory is the tick's, not what the compaction left behind)."""
    out: dict[str, Any] = {"rss_start_mb": status_mb("VmRSS"), "maxrss_start_mb": maxrss_mb()}
    from sqlalchemy import text

    from app.evaluation.profiles import ProfileCache
    from app.jobs.runner import maintain_summaries, run_window
    from app.settings import Settings
    from app.storage import registry
    from app.storage.db import make_engine

    settings = Settings(database_url=url, job_interval_seconds=INTERVAL,
                        job_window_seconds=WINDOW, job_catchup_windows=1,
                        scheduler_enabled=False)
    engine = make_engine(settings)
    with engine.connect() as conn:
        model = registry.get_model(conn=conn, name="bench")
    assert model is not None
    window_end = datetime.fromisoformat(window_end_iso)
    window_start = window_end - timedelta(seconds=WINDOW)
    now = window_end + timedelta(seconds=1)
    profiles = ProfileCache()
    out["rss_after_imports_mb"] = status_mb("VmRSS")

    def load_profiles() -> int:
        with engine.connect() as conn:
            return len(profiles.get(conn, registry.version_ids(
                conn=conn, model_ids={model.id}).values()))

    # Loading and compiling the reference profile happens once per process: timed apart.
    _, out["profile_load"] = measured(load_profiles)

    def maintain(at: datetime = now) -> dict[str, int]:
        return maintain_summaries(engine, settings, at, profiles, [model])

    def tick() -> dict[str, Any]:
        steps: dict[str, Any] = {}
        counts, steps["maintain"] = measured(maintain)
        steps["maintain"]["counts"] = counts
        for job in JOBS:
            outcome, steps[job] = measured(lambda job=job: run_window(
                engine, job, model, window_start, window_end, settings, now=now,
                profiles=profiles))
            assert outcome == "success", (job, outcome)
        steps["checks"] = check_results(engine, model.id, window_end, n, n_labels)
        return steps

    def forget_results() -> None:
        with engine.begin() as conn:
            out["deleted_results"] = conn.execute(text("DELETE FROM metric_results")).rowcount
            out["deleted_runs"] = conn.execute(text("DELETE FROM job_runs")).rowcount

    peaks = [out["rss_after_imports_mb"]]
    if mode == "first":
        # The first upkeep compacts the fill's partial rows: first as a live scheduler meets
        # them (the bucket that just closed), then the other 11 buckets at once.
        counts, one = measured(lambda: maintain(window_start + timedelta(seconds=INTERVAL + 1)))
        one["counts"] = counts
        counts, rest = measured(maintain)
        out["one_bucket_maintain"] = one
        out["first_maintain"] = {
            "wall": one["wall"] + rest["wall"], "cpu": one["cpu"] + rest["cpu"],
            "peak_mb": max(one["peak_mb"], rest["peak_mb"]), "load_before": one["load_before"],
            "load_after": rest["load_after"],
            "counts": {k: one["counts"][k] + v for k, v in counts.items()}}
        peaks.append(out["first_maintain"]["peak_mb"])
        out["tick1"] = tick()
        forget_results()
        out["tick2"] = tick()
        ticks = ("tick1", "tick2")
    else:
        forget_results()
        out["tick"] = tick()
        ticks = ("tick",)
    out["maxrss_end_mb"] = maxrss_mb()
    # Each step's peak covers its own span (VmHWM reset before it): the process peak is the
    # largest of them (and of the start-up, before the first reset).
    out["process_peak_mb"] = max(
        *peaks, status_mb("VmHWM"),
        *(out[t][s]["peak_mb"] for t in ticks for s in ("maintain", *JOBS)))
    out["peak_reset_works"] = reset_peak()
    engine.dispose()
    print("RESULT " + json.dumps(out), flush=True)


def check_results(engine: Any, model_id: int, window_end: datetime, n: int,
                  n_labels: int) -> dict[str, Any]:
    """The stored results count every prediction and label of the window, and the drift
    job sees the shifted features and not the others."""
    from sqlalchemy import text

    q = text("SELECT job, metric, subject, n, value, decision FROM metric_results "
             "WHERE model_id = :m AND window_end = :e")
    with engine.connect() as conn:
        rows = list(conn.execute(q, {"m": model_id, "e": window_end}))
    by = {(r.metric, r.subject): r for r in rows}
    cov = by[("label_coverage", "")]
    assert cov.n == n and abs(cov.value - n_labels / n) < 1e-12, (cov, n, n_labels)
    assert by[("calibration_ece", "")].n == n_labels
    cohort_n = sum(r.n for r in rows if r.metric == "cohort_error_ratio")
    assert cohort_n == n_labels, (cohort_n, n_labels)
    drifted = sorted(r.subject for r in rows if r.metric == "feature_psi"
                     and r.decision in ("warning", "critical"))
    for j in SHIFTED:
        assert f"f{j}" in drifted, drifted
    ks_n = {r.subject: r.n for r in rows if r.metric == "feature_ks_statistic"}
    assert all(0.98 * n <= v <= n for v in ks_n.values()), ks_n
    return {"results": len(rows), "drift_warning_or_critical": drifted,
            "label_coverage": cov.value,
            "jobs": sorted({r.job for r in rows})}


def run_tick_child(url: str, window_end: datetime, n: int, n_labels: int,
                   mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-tick", url,
         window_end.isoformat(), str(n), str(n_labels), mode],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    lines = proc.stdout.splitlines()
    result = [ln for ln in lines if ln.startswith("RESULT ")]
    for ln in lines:
        if not ln.startswith("RESULT "):
            print("    child: " + ln)
    if proc.returncode != 0 or not result:
        raise SystemExit(f"tick child failed (exit {proc.returncode})")
    return json.loads(result[-1][len("RESULT "):])


# --------------------------------------------------------------------------- payload sizes


def payload_sizes(n: int, version_id: int = 1) -> dict[str, Any]:
    """Packed drift summary of one bucket (n / 12 rows) for this model's 23 features and for
    a 47 numeric + 3 categorical model, from the same generator (chunks of 100k rows, added
    up as the summaries are)."""
    import numpy as np

    from app.evaluation.counting import drift_summaries
    from app.evaluation.packing import pack_drift
    from app.evaluation.profiles import build_profile
    from app.evaluation.summaries import CompiledProfile, ModelShape, Rows
    from app.storage.registry import ModelRow

    rows_per_bucket = max(1, n * INTERVAL // WINDOW)
    out: dict[str, Any] = {"rows_per_bucket": rows_per_bucket}
    for n_numeric in (N_NUMERIC, 47):
        names = [f"f{j}" for j in range(n_numeric)]
        features = [{"name": f, "type": "numeric"} for f in names]
        features += [{"name": c, "type": "categorical"} for c in CATEGORICAL]
        model = ModelRow(1, "wide", "binary_classification", features, ["region"],
                         ["good", "bad"], datetime.now(UTC))
        shape = ModelShape.of(model)

        def columns(d: dict[str, Any], names: list[str] = names) -> dict[str, Any]:
            reps = -(-len(names) // N_NUMERIC)
            x = np.tile(d["x"], (1, reps))[:, :len(names)]
            cols = {f: x[:, j] for j, f in enumerate(names)}
            cats = category_names(d["cats"])
            for j, c in enumerate(CATEGORICAL):
                cols[c] = np.array(cats[:, j], dtype=object)
            return cols

        ref = generate(N_REFERENCE, 0, current=False, seed=SEED + 1)
        cp = CompiledProfile.compile(build_profile(model, columns(ref), ("numeric", ref["score"]),
                                                   N_REFERENCE), "k")
        total = None
        for k, s in enumerate(range(0, rows_per_bucket, 100_000)):
            m = min(100_000, rows_per_bucket - s)
            d = generate(m, 10_000 + k, current=True, seed=SEED + 2)
            rows = Rows(version_id=np.full(m, version_id), ts=np.zeros(m),
                        features=columns(d), score=d["score"])
            part = drift_summaries(shape, cp, rows, np.zeros(m, dtype=np.int64), 1)[0]
            if total is None:
                total = part
            else:
                total.add(part)
        out[f"drift_bytes_{n_numeric + 3}_features"] = len(pack_drift(total))
        out[f"drift_slots_{n_numeric + 3}_features"] = cp.size
    return out


# --------------------------------------------------------------------------- peers


def ensure_peer_venv() -> Path:
    py = PEER_VENV / "bin" / "python"
    probe = ("import evidently, whylogs, pandas, pyarrow; "
             "from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores; "
             "assert evidently.__version__ == '0.7.23', evidently.__version__")
    ok = py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True,
                                        check=False).returncode == 0
    if not ok:
        print(f"  installing {' '.join(PEER_PACKAGES)} into {PEER_VENV} ...", flush=True)
        log = Path(tempfile.gettempdir()) / "modelmon-bench-peers-install.log"
        with open(log, "w") as f:
            subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True, stdout=f,
                           stderr=f)
            subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_PACKAGES],
                           check=True, stdout=f, stderr=f)
    return py


def write_peer_data(directory: Path, n: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    for name, (cols, scores) in (("reference", reference_columns()),
                                 ("current", current_columns(n))):
        table = pa.table({**{k: pa.array(v, from_pandas=True) for k, v in cols.items()},
                          "score": pa.array(scores)})
        path = directory / f"{name}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths[0], paths[1]


def peer_child(tool: str, ref_path: str, cur_path: str) -> None:
    """Runs in the peers' venv: load both frames, then time the tool's drift computation."""
    import pandas as pd

    t = time.perf_counter()
    ref = pd.read_parquet(ref_path)
    cur = pd.read_parquet(cur_path)
    load_s = time.perf_counter() - t
    numeric = [c for c in ref.columns if c.startswith("f")] + ["score"]
    categorical = [c for c in ref.columns if c.startswith("c")]
    for df in (ref, cur):
        for c in categorical:
            df[c] = df[c].astype(object)
    rss_loaded = status_mb("VmRSS")
    reset_peak()
    before = load()
    c0, t0 = cpu_seconds(), time.perf_counter()
    if tool == "evidently":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        dd = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd),
                                               Dataset.from_pandas(ref, data_definition=dd))
        metrics = snap.dict()["metrics"]
        drifted = int(metrics[0]["value"]["count"])
        methods = sorted({m["config"].get("method") for m in metrics[1:]
                          if m["config"].get("method")})
    else:
        import whylogs as why
        from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

        rv = why.log(ref).view()
        cv = why.log(cur).view()
        scores = calculate_drift_scores(target_view=cv, reference_view=rv,
                                        with_thresholds=True)
        drifted = sum(1 for s in scores.values() if s and s["drift_category"] == "DRIFT")
        methods = sorted({s["algorithm"] for s in scores.values() if s})
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print("RESULT " + json.dumps({
        "tool": tool, "rows": len(cur), "reference_rows": len(ref), "load_s": load_s,
        "wall": wall, "cpu": cpu, "rss_loaded_mb": rss_loaded,
        "peak_compute_mb": status_mb("VmHWM"), "load_before": before, "load_after": load(),
        "drifted_columns": drifted, "methods": methods}), flush=True)


def run_peers(n: int) -> dict[str, Any]:
    py = ensure_peer_venv()
    out = {}
    with tempfile.TemporaryDirectory(prefix="modelmon-bench-peers-") as tmp:
        ref_path, cur_path = write_peer_data(Path(tmp), n)
        env = {**os.environ, "DO_NOT_TRACK": "1", "WHYLOGS_NO_ANALYTICS": "True",
               "PYTHONWARNINGS": "ignore"}
        for tool in ("evidently", "whylogs"):
            print(f"  peer {tool}: {n:,} current rows vs {N_REFERENCE:,} reference rows, "
                  f"load {load()}", flush=True)
            proc = subprocess.run(
                [str(py), str(Path(__file__).resolve()), "--child-peer", tool, str(ref_path),
                 str(cur_path)], capture_output=True, text=True,
                env=env, check=False)
            result = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not result:
                print(proc.stderr[-3000:])
                raise SystemExit(f"peer {tool} failed (exit {proc.returncode})")
            out[tool] = json.loads(result[-1][len("RESULT "):])
            r = out[tool]
            print(f"    {tool}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, peak "
                  f"{r['peak_compute_mb']:.0f} MB (frames loaded: {r['rss_loaded_mb']:.0f} MB, "
                  f"read {r['load_s']:.2f} s), {r['drifted_columns']} drifted columns, "
                  f"{', '.join(r['methods'])}; load {r['load_before']} -> {r['load_after']}",
                  flush=True)
    return out


# --------------------------------------------------------------------------- report


def tick_total(steps: dict[str, Any]) -> dict[str, float]:
    parts = [steps["maintain"], *(steps[j] for j in JOBS)]
    return {"wall": sum(p["wall"] for p in parts), "cpu": sum(p["cpu"] for p in parts),
            "peak_mb": max(p["peak_mb"] for p in parts),
            "jobs_wall": sum(steps[j]["wall"] for j in JOBS)}


def print_size(r: dict[str, Any]) -> None:
    f, t = r["fill"], r["tick"]
    n = f["n"]
    print(f"\n=== {n:,} predictions, {f['n_labels']:,} labels ===")
    print(f"fill: {n / f['fill_store_s']:,.0f} rows/s stored (write + summarize + append, "
          f"{f['fill_store_s']:.1f} s; generating the rows took another "
          f"{f['fill_gen_s']:.1f} s); load {f['load_before_fill']} -> {f['load_after_fill']}")
    print(f"labels: {f['n_labels'] / f['labels_store_s']:,.0f} labels/s stored "
          f"({f['labels_store_s']:.1f} s); load {f['load_before_labels']} -> "
          f"{f['load_after_labels']}")
    print(f"summarize: {f['summarize_us']:.2f} us/prediction wall "
          f"({f['summarize_cpu_us']:.2f} CPU), {f['summarize_label_us']:.2f} us/label wall "
          f"({f['summarize_label_cpu_us']:.2f} CPU)")
    bc, s = f["before_compaction"], r["summaries"]
    print(f"bucket summaries before compaction: {bc['rows']:,} rows, "
          f"{bc['bytes'] / 1e6:,.1f} MB; after: {s['rows']} rows, {s['bytes'] / 1e3:,.1f} kB "
          f"over {s['buckets']} buckets ({s['bytes_per_bucket'] / 1e3:,.1f} kB per bucket; "
          + ", ".join(f"{k} {v['bytes'] / max(1, v['rows']) / 1e3:,.1f} kB/row"
                      for k, v in sorted(s["by_kind"].items())) + ")")
    p = r.get("payload")
    if p:
        print(f"packed drift summary of one bucket ({p['rows_per_bucket']:,} rows): "
              f"23 features {p['drift_bytes_23_features'] / 1e3:,.1f} kB "
              f"({p['drift_slots_23_features']:,} slots), 50 features "
              f"{p['drift_bytes_50_features'] / 1e3:,.1f} kB "
              f"({p['drift_slots_50_features']:,} slots)")
    fm, ob, pl = t["first_maintain"], t["one_bucket_maintain"], t["profile_load"]
    print(f"child: RSS {t['rss_after_imports_mb']:.0f} MB after imports; profile load + "
          f"compile, once per process (not in the figures below): {pl['wall']:.3f} s wall, "
          f"{pl['cpu']:.3f} s CPU")
    print(f"first upkeep: {fm['wall']:.2f} s wall, {fm['cpu']:.2f} s CPU, peak "
          f"{fm['peak_mb']:.0f} MB, {fm['counts']}; load {fm['load_before']} -> "
          f"{fm['load_after']}")
    print(f"  of which the first bucket alone (what a live tick compacts at this rate): "
          f"{ob['wall']:.3f} s wall, {ob['cpu']:.3f} s CPU, peak {ob['peak_mb']:.0f} MB, "
          f"{ob['counts']}")
    labels = {"tick1": "first tick", "tick2": "steady-state tick (second run, same process)",
              "fresh": "steady-state tick in a fresh process (summaries already compacted)"}
    for name in ("tick1", "tick2", "fresh"):
        steps = r["fresh"]["tick"] if name == "fresh" else t[name]
        label = labels[name]
        print(f"{label}:")
        print(f"  {'step':<12} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}   load before -> after")
        for step in ("maintain", *JOBS):
            m = steps[step]
            print(f"  {step:<12} {m['wall']:8.3f} {m['cpu']:8.3f} {m['peak_mb']:8.0f}   "
                  f"{m['load_before']} -> {m['load_after']}")
        tot = tick_total(steps)
        print(f"  {'total':<12} {tot['wall']:8.3f} {tot['cpu']:8.3f} {tot['peak_mb']:8.0f}   "
              f"(four jobs alone {tot['jobs_wall']:.3f} s)")
        c = steps["checks"]
        print(f"  checks: {c['results']} results, coverage {c['label_coverage']:.4f}, "
              f"drift warning/critical: {', '.join(c['drift_warning_or_critical'])}")
    fr = r["fresh"]
    print(f"process peak RSS (VmHWM), first child: {t['process_peak_mb']:.0f} MB; fresh child: "
          f"{fr['process_peak_mb']:.0f} MB (RSS {fr['rss_after_imports_mb']:.0f} MB after "
          f"imports). ru_maxrss would say {t['maxrss_end_mb']:.0f} MB: it keeps the peak of "
          f"the parent image the child was exec'd from ({t['maxrss_start_mb']:.0f} MB)")


def summary(results: dict[int, dict[str, Any]], peers: dict[str, Any] | None) -> None:
    print("\n=== summary (goals: tick <= 1 s and <= 300 MB at every size; 10M tick within "
          "2x of 100k; summarize <= 10 us/prediction) ===")
    print("tick = upkeep + the four jobs, steady state: (a) second run in the first child, "
          "(b) fresh child")
    print(f"{'rows':>11} {'fill rows/s':>12} {'us/pred':>8} {'us/label':>9} "
          f"{'1st upkeep s':>13} {'tick a s':>9} {'CPU a s':>8} {'peak a MB':>10} "
          f"{'tick b s':>9} {'CPU b s':>8} {'proc b MB':>10} {'old tick s':>11} {'old MB':>7}")
    for n, r in sorted(results.items()):
        f, t = r["fill"], r["tick"]
        a, b = tick_total(t["tick2"]), tick_total(r["fresh"]["tick"])
        old = OLD.get(n, (None, None))
        print(f"{n:>11,} {n / f['fill_store_s']:>12,.0f} {f['summarize_us']:>8.2f} "
              f"{f['summarize_label_us']:>9.2f} {t['first_maintain']['wall']:>13.2f} "
              f"{a['wall']:>9.3f} {a['cpu']:>8.3f} {a['peak_mb']:>10.0f} "
              f"{b['wall']:>9.3f} {b['cpu']:>8.3f} {r['fresh']['process_peak_mb']:>10.0f} "
              f"{old[0] if old[0] else '-':>11} {old[1] if old[1] else '-':>7}")
    ticks = {n: tick_total(r["tick"]["tick2"])["wall"] for n, r in results.items()}
    fresh = {n: tick_total(r["fresh"]["tick"])["wall"] for n, r in results.items()}
    if 10_000_000 in ticks and 100_000 in ticks:
        print(f"tick at 10M / tick at 100k: {ticks[10_000_000] / ticks[100_000]:.2f}x (a), "
              f"{fresh[10_000_000] / fresh[100_000]:.2f}x (b) (goal: <= 2x)")
    if peers and 1_000_000 in ticks:
        for tool, p in peers.items():
            print(f"tick at 1M / {tool} at 1M: {ticks[1_000_000] / p['wall']:.4f} "
                  f"({tool} {p['wall']:.1f} s, {p['peak_compute_mb']:.0f} MB peak)")
    print(f"load average now: {load()}")
    print("RESULTS " + json.dumps({str(n): r for n, r in results.items()} | {"peers": peers}))


def run_size(n: int, keep: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    window_end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    url = create_database()
    print(f"\n--- {n:,} predictions in [{window_end - timedelta(seconds=WINDOW):%Y-%m-%d %H:%M}, "
          f"{window_end:%H:%M}) UTC, database {url.rsplit('/', 1)[-1]}; load {load()}",
          flush=True)
    try:
        f = fill(url, n, window_end)
        print(f"  filled: {n / f['fill_store_s']:,.0f} rows/s, summarize "
              f"{f['summarize_us']:.2f} us/prediction; labels "
              f"{f['n_labels'] / f['labels_store_s']:,.0f}/s, summarize "
              f"{f['summarize_label_us']:.2f} us/label; load {load()}", flush=True)
        t = run_tick_child(url, window_end, n, f["n_labels"], "first")
        fresh = run_tick_child(url, window_end, n, f["n_labels"], "fresh")
        from app.settings import Settings
        from app.storage.db import make_engine

        engine = make_engine(Settings(database_url=url))
        s = summary_stats(engine, window_end - timedelta(seconds=WINDOW), window_end)
        engine.dispose()
        result = {"fill": f, "tick": t, "fresh": fresh, "summaries": s,
                  "payload": payload_sizes(n)}
        print_size(result)
        return result
    finally:
        if keep:
            print(f"  kept database {url}")
        else:
            drop_database(url)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-tick":
        child_tick(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child-peer":
        peer_child(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000")
    ap.add_argument("--peers", action="store_true",
                    help="Evidently and whylogs on the same 1M rows (needs 1000000 in --sizes)")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"bench_jobs {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"load {load()}; sizes {', '.join(f'{s:,}' for s in sizes)}", flush=True)
    results = {n: run_size(n, args.keep) for n in sizes}
    peers = None
    if args.peers:
        if 1_000_000 not in sizes:
            print("--peers: skipped (runs at 1,000,000 rows; add it to --sizes)")
        else:
            print("\n--- peers at 1,000,000 rows", flush=True)
            peers = run_peers(1_000_000)
    summary(results, peers)


if __name__ == "__main__":
    main()
