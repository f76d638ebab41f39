"""/metrics rendering: model-quality families from stored results, for many models.

    .venv/bin/python bench/bench_metrics.py [--models 100] [--features 30] [--cohorts 10]
        [--history 48]

Builds the snapshot the collector reads (one row per stored result: per model and version,
three feature metrics per feature, one per cohort, a few model-level ones) and times turning
it into Prometheus families and exposition text, twice the models as a baseline ratio (the
cost must grow linearly with the rows). Then, on PostgreSQL (MODELMON_TEST_DATABASE_URL or
postgres@127.0.0.1:5432, a throwaway database), the snapshot read itself with one window of
results and job runs stored, then with ``--history`` windows of both: its cost must not grow
with the history kept. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from app.observability.quality import build_families

LIMITS = {"features": 50, "cohorts": 20, "layers": 100}


def snapshot(models: int, features: int, cohorts: int) -> dict:
    rows = []
    for m in range(models):
        for v in ("v1", "v2"):
            base = {"model": f"model{m}", "version": v, "n": 1000, "detail": None,
                    "decision": "ok"}
            for f in range(features):
                for metric in ("feature_psi", "feature_ks_statistic", "feature_missing_ratio"):
                    rows.append({**base, "metric": metric, "subject": f"f{f}",
                                 "value": 0.01 * f,
                                 "detail": {"pvalue": 0.5} if "ks" in metric else None})
            for c in range(cohorts):
                rows.append({**base, "metric": "cohort_error_ratio",
                             "subject": f"region=r{c}", "value": 0.1,
                             "detail": {"ci_low": 0.05, "ci_high": 0.15}})
            for metric in ("calibration_ece", "error_ratio", "label_coverage",
                           "label_delay_p50_seconds", "label_delay_p90_seconds"):
                rows.append({**base, "metric": metric, "subject": "", "value": 0.2})
    return {"results": rows, "job_last_success": {}, "job_last_failed": {},
            "last_prediction": {}, "slo": {}, "versions": [], "weights": [], "deltas": []}


class Fixed(Collector):
    def __init__(self, fams: list) -> None:
        self.fams = fams

    def collect(self):
        return iter(self.fams)


def render(snap: dict) -> tuple[float, int, int]:
    t = time.perf_counter()
    try:  # a typed snapshot, in trees that have one
        from app.storage.snapshot import MetricsSnapshot
        snap = MetricsSnapshot(**snap)
    except ImportError:
        pass
    fams = build_families(snap, LIMITS, 300.0)
    reg = CollectorRegistry()
    reg.register(Fixed(fams))
    text = generate_latest(reg)
    return time.perf_counter() - t, len(text), sum(len(f.samples) for f in fams)


def database_read(models: int, features: int, cohorts: int, history: int) -> None:
    """Time load_snapshot on PostgreSQL with 1 and then ``history`` windows stored."""
    import uuid
    from datetime import UTC, datetime, timedelta

    import psycopg
    from sqlalchemy.engine import make_url

    from app.observability.metrics import JOBS
    from app.settings import Settings
    from app.storage.db import make_engine
    from app.storage.migrate import upgrade
    try:
        from app.storage.snapshot import load_snapshot
    except ImportError:
        from app.storage.quality import load_snapshot

    admin = make_url(os.environ.get("MODELMON_TEST_DATABASE_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"modelmon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(Settings(database_url=url))
    try:
        upgrade(engine)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        rows = snapshot(models, features, cohorts)["results"]
        with psycopg.connect(admin.set(database=name, drivername="postgresql")
                             .render_as_string(hide_password=False)) as conn:
            with conn.cursor().copy("COPY models (id, name, task, features, cohort_keys, "
                                    "created_at) FROM STDIN") as cp:
                for m in range(models):
                    cp.write_row((m + 1, f"model{m}", "binary_classification", "[]", "[]", now))
            with conn.cursor().copy("COPY model_versions (id, model_id, version, created_at, "
                                    "registered_at, metadata) FROM STDIN") as cp:
                for m in range(models):
                    for j, v in enumerate(("v1", "v2")):
                        cp.write_row((2 * m + j + 1, m + 1, v, now, now, "{}"))
            stored = 0
            for windows in (1, history):
                with conn.cursor().copy(
                        "COPY metric_results (job, model_id, version_id, metric, subject, "
                        "window_start, window_end, n, value, decision, method, detail, "
                        "computed_at) FROM STDIN") as cp:
                    for w in range(stored, windows):
                        end = now - timedelta(minutes=5 * w)
                        for r in rows:
                            m = int(r["model"][5:])
                            vid = 2 * m + (1 if r["version"] == "v1" else 2)
                            cp.write_row(("drift", m + 1, vid, r["metric"], r["subject"],
                                          end - timedelta(hours=1), end, r["n"], r["value"],
                                          r["decision"], "bench", None, end))
                with conn.cursor().copy(
                        "COPY job_runs (job, model_id, window_start, window_end, status, "
                        "started_at, finished_at, worker) FROM STDIN") as cp:
                    for w in range(stored, windows):
                        end = now - timedelta(minutes=5 * w)
                        for m in range(models):
                            for job in JOBS:
                                cp.write_row((job, m + 1, end - timedelta(hours=1), end,
                                              "success", end, end, "bench"))
                conn.commit()
                conn.execute("ANALYZE")
                conn.commit()
                stored = windows
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    snap = load_snapshot(engine, max_result_age_seconds=3600,
                                         max_versions=3, jobs=JOBS)
                    times.append(time.perf_counter() - t)
                one, five, fifteen = os.getloadavg()
                read = snap.results if hasattr(snap, "results") else snap["results"]
                print(f"snapshot read, {windows} window(s) stored "
                      f"({windows * len(rows):,} results, {windows * models * len(JOBS):,} "
                      f"job runs): {min(times):.3f} s for {len(read):,} results "
                      f"(load average {one:.2f} {five:.2f} {fifteen:.2f})")
    finally:
        engine.dispose()
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--cohorts", type=int, default=10)
    ap.add_argument("--history", type=int, default=48,
                    help="windows of results and job runs stored for the database read")
    a = ap.parse_args()
    one, five, fifteen = os.getloadavg()
    print(f"load average {one:.2f} {five:.2f} {fifteen:.2f}")
    for models in (a.models, 2 * a.models):
        snap = snapshot(models, a.features, a.cohorts)
        n = len(snap["results"])
        best = min(render(snapshot(models, a.features, a.cohorts)) for _ in range(3))
        print(f"{models} models x 2 versions x {a.features} features x {a.cohorts} cohorts: "
              f"{n:,} stored results -> {best[2]:,} samples, {best[1] / 1e6:.1f} MB, "
              f"{best[0]:.3f} s")
    database_read(a.models, a.features, a.cohorts, a.history)


if __name__ == "__main__":
    main()
