"""Render time and weight of the pages (/ui, a version's page, a feature's page and the
versions page) for models of 10 and 50 features.

    .venv/bin/python bench/bench_pages.py [--features 10 50] [--rows 5000] [--repeat 20]
                                          [--windows 24] [--hours 1] [--database-url URL]

Per feature count: a binary model with that many numeric features and one categorical one,
a reference of 5,000 rows, ``--rows`` predictions in the latest window (or the latest
``--hours``; a third of the features shifted, every prediction labeled, four cohorts), stored
through the API in process
(TestClient) on an embedded SQLite file by default or on ``--database-url``. Then each page
is fetched ``--repeat`` times after one first fetch: the server's whole answer (the three
reports computed on one snapshot, the stored history read, the templates rendered), in
process, so the time is the service's own; and, for comparison, the three REST reports the
version page shows, fetched one after the other (``rest_reports``: their time; the bytes are
the last one's). Before the pages, one scheduler tick stores ``--windows`` windows of results
(the history the sparklines, ECE over time and a feature's PSI over time read) and each
version gets weights (a ``coef`` over its features, v2 sparser than v1). The first fetch of
each page runs with the process's memos of costly pure figures emptied (the exact KS, the
ECE null, the noise quantiles): ``first_ms`` is a cold render in a fresh service process
after the scheduler's tick (which stored its exact KS figures in the shared memo table; the
table is set back to what the tick left before each page's first fetch), the median a
repeated one, ``unshared_ms`` a cold render with that table emptied too (a window no job
computed). The version page is also fetched over the 6h and 24h presets ending at the
latest window (``version_page_6h``, ``version_page_24h``), and the three REST reports over
the same windows (``rest_reports_6h``, ``rest_reports_24h``: what their figures cost without
a page): windows no job computes, whose first fetch computes their figures unless they equal
a computed window's (with every prediction in the latest hour, the default, they hold the same
sums as the 1h window; with ``--hours`` the predictions are spread over that many hours, as
steady traffic would be).
Prints, per page, the first, median and slowest time and the bytes of the HTML, with the
load average around the runs, and a ``RESULTS`` line; asserts nothing. The goal (issue 25):
<= 300 ms and <= 300 kB for 50 features.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from app.jobs.runner import aligned_end, tick  # noqa: E402
from app.main import create_app  # noqa: E402
from app.pages.windows import PRESETS as LENGTHS  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.storage import migrate  # noqa: E402

INTERVAL, WINDOW = 300, 3600


def model(f: int) -> dict:
    feats = [{"name": f"f{i}", "type": "numeric"} for i in range(f)]
    return {"name": "bench", "task": "binary_classification",
            "features": [*feats, {"name": "channel", "type": "categorical"}],
            "cohort_keys": ["region"], "classes": ["good", "bad"]}


def rows(rng: np.random.Generator, n: int, f: int, shift: bool) -> tuple[np.ndarray, list]:
    x = rng.normal(size=(n, f))
    if shift:
        x[:, : max(f // 3, 1)] += 0.5
    return x, list(rng.choice(["web", "app", "store"], size=n))


def reference(rng: np.random.Generator, f: int, n: int = 5000) -> bytes:
    x, ch = rows(rng, n, f, False)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([*(f"f{i}" for i in range(f)), "channel", "score"])
    for i in range(n):
        w.writerow([*(f"{v:.5f}" for v in x[i]), ch[i], f"{rng.beta(2, 5):.5f}"])
    return out.getvalue().encode()


def seed(c: TestClient, f: int, n: int, rng: np.random.Generator, hours: int = 1
         ) -> tuple[datetime, datetime]:
    r = c.post("/v1/models", json=model(f))
    assert r.status_code == 201, r.text
    assert c.post("/v1/models/bench/versions", json={"version": "v1"}).status_code == 201
    r = c.post("/v1/models/bench/versions/v1/reference", content=reference(rng, f),
               headers={"content-type": "text/csv"})
    assert r.status_code == 201, r.text
    end = aligned_end(datetime.now(UTC), INTERVAL)
    start = end - timedelta(seconds=WINDOW)
    span = WINDOW * hours  # the predictions spread evenly over the last ``hours`` windows
    first = end - timedelta(seconds=span)
    x, ch = rows(rng, n, f, True)
    scores = rng.beta(2, 5, size=n)
    y = rng.random(n) < scores
    regions = rng.choice(["north", "south", "east", "west"], size=n)
    for lo in range(0, n, 1000):
        batch = range(lo, min(lo + 1000, n))
        ts = [(first + timedelta(seconds=span * i / n)).isoformat() for i in batch]
        preds = [{"model": "bench", "version": "v1", "prediction_id": f"p{i}", "timestamp": t,
                  "features": {**{f"f{j}": float(x[i, j]) for j in range(f)},
                               "channel": str(ch[i])},
                  "prediction": {"score": float(scores[i])},
                  "cohorts": {"region": str(regions[i])}} for i, t in zip(batch, ts, strict=True)]
        assert c.post("/v1/predictions", json={"records": preds}).status_code == 200
        labels = [{"model": "bench", "prediction_id": f"p{i}",
                   "label": "bad" if y[i] else "good", "timestamp": t}
                  for i, t in zip(batch, ts, strict=True)]
        assert c.post("/v1/labels", json={"records": labels}).status_code == 200
    return start, end


def cold(engine: Any = None, rows: list[dict] | None = None) -> None:
    """Empty the process's memos of costly pure figures, as in a freshly started service;
    with ``engine``, set the database's shared memo to ``rows`` too (none: a window no job
    has computed; the rows the scheduler's tick left: a fresh process after that tick)."""
    from app.monitoring import drift, gates
    drift.KS_MEMO.clear()
    drift._ks_asymptotic_pvalue.cache_clear()
    gates.ECE_NULL_MEMO.clear()
    gates.KS_NOISE_MEMO.clear()
    for f in (gates.psi_min_support, gates.out_of_range_null, gates._chi2_isf):
        f.cache_clear()
    if engine is not None:
        from app.storage.tables import memo_results
        with engine.begin() as conn:
            conn.execute(memo_results.delete())
            if rows:
                conn.execute(memo_results.insert(), rows)


def memo_rows(engine: Any) -> list[dict]:
    """The shared memo's rows as they are now (after the scheduler's tick)."""
    from sqlalchemy import select

    from app.storage.tables import memo_results
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(memo_results))]


def weights(c: TestClient, f: int, rng: np.random.Generator) -> None:
    """v1's and v2's weights: a coef over the features, a fifth of them zero in v2."""
    coef = rng.normal(size=(1, f + 1))
    for version, scale in (("v1", 1.0), ("v2", 0.8)):
        w = coef * scale
        if version == "v2":
            w[0, : max(f // 5, 1)] = 0.0
        buf = io.BytesIO()
        np.savez(buf, coef=w, intercept=np.zeros(1))
        r = c.post(f"/v1/models/bench/versions/{version}/weights", content=buf.getvalue(),
                   headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text


def fetch(c: TestClient, paths: list[str], params: dict) -> tuple[float, int]:
    """The time of fetching ``paths`` one after the other, in ms, and the last one's bytes."""
    t0 = time.perf_counter()
    for path in paths:
        r = c.get(path, params=params)
        assert r.status_code == 200, r.text[:300]
    return (time.perf_counter() - t0) * 1000, len(r.content)


def measure(c: TestClient, paths: list[str], params: dict, repeat: int,
            after_tick: list[dict]) -> dict:
    """The time of fetching ``paths``: first in a fresh process after the scheduler's tick
    (``first_ms``: local memos empty, the shared memo as the jobs left it, ``after_tick``),
    then ``repeat`` times, then once more with the shared memo emptied too (``unshared_ms``:
    a window no job computed, every costly figure computed by the page); and the bytes of
    the last."""
    engine = c.app.state.engine
    cold(engine, after_tick)  # what an earlier page's unshared fetch emptied or added, undone
    first, _ = fetch(c, paths, params)
    times = [fetch(c, paths, params)[0] for _ in range(repeat)]
    cold(engine)
    unshared, size = fetch(c, paths, params)
    return {"first_ms": round(first, 1), "median_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1), "unshared_ms": round(unshared, 1),
            "bytes": size}


PAGES = {"version_page": "/ui/models/bench/versions/v1",
         "feature_page": "/ui/models/bench/versions/v1/features/f0",
         "versions_page": "/ui/models/bench/versions", "models_page": "/ui"}
# The version page over windows no job computes: the presets ending at the job's window end.
PRESETS = ("6h", "24h")


def _preset_window(preset: str, end: datetime) -> dict:
    """The start and end a preset ending at ``end`` stands for (app/pages/windows.py)."""
    return {"start": (end - timedelta(seconds=LENGTHS[preset])).isoformat(),
            "end": end.isoformat()}


def run(f: int, n: int, repeat: int, url: str | None, windows: int, hours: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db = url or f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=db, job_interval_seconds=INTERVAL,
                            job_window_seconds=WINDOW, scheduler_enabled=False,
                            job_catchup_windows=windows)
        app = create_app(settings)
        migrate.upgrade(app.state.engine)
        with TestClient(app, base_url="http://127.0.0.1") as c:
            rng = np.random.default_rng(f)
            start, end = seed(c, f, n, rng, hours)
            assert c.post("/v1/models/bench/versions", json={"version": "v2"}).status_code == 201
            weights(c, f, rng)
            t0 = time.perf_counter()
            tick(app.state.engine, settings, now=end + timedelta(seconds=1))
            tick_ms = (time.perf_counter() - t0) * 1000
            after_tick = memo_rows(app.state.engine)
            params = {"start": start.isoformat(), "end": end.isoformat()}
            rest = [f"/v1/models/bench/reports/{k}?version=v1"
                    for k in ("drift", "calibration", "cohorts")]
            out = {"features": f, "rows": n, "windows": windows, "hours": hours,
                   "tick_ms": round(tick_ms, 1),
                   **{name: measure(c, [path], params, repeat, after_tick)
                      for name, path in PAGES.items()},
                   "rest_reports": measure(c, rest, params, repeat, after_tick),
                   **{f"version_page_{p}": measure(c, [PAGES["version_page"]],
                                                   {"preset": p, "end": end.isoformat()},
                                                   repeat, after_tick) for p in PRESETS},
                   # the same windows through the REST reports: what the figures cost alone
                   **{f"rest_reports_{p}": measure(c, rest, _preset_window(p, end), repeat,
                                                   after_tick) for p in PRESETS}}
        app.state.engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--windows", type=int, default=24, help="stored windows of history")
    ap.add_argument("--hours", type=int, default=1,
                    help="spread the --rows predictions over this many hours (1: all in the "
                         "page's window)")
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    results = []
    for f in args.features:
        res = run(f, args.rows, args.repeat, args.database_url, args.windows, args.hours)
        results.append(res)
        print(f"{f:>3} features: the tick computing {args.windows} windows of each job took "
              f"{res['tick_ms']:.0f} ms ({res['tick_ms'] / args.windows:.0f} ms a window)")
        for page in (*PAGES, "rest_reports",
                     *(f"{k}_{p}" for p in PRESETS for k in ("version_page", "rest_reports"))):
            m = res[page]
            print(f"{f:>3} features, {page:<16}: first {m['first_ms']:>7.1f} ms, median "
                  f"{m['median_ms']:>7.1f} ms, max {m['max_ms']:>7.1f} ms, unshared "
                  f"{m['unshared_ms']:>7.1f} ms, {m['bytes'] / 1000:>6.1f} kB")
    print(f"load average after: {os.getloadavg()}")
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
