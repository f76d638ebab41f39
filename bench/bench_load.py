"""Ingest under load with the scheduler on and off: does the service's own work slow ingest?

    .venv/bin/python bench/bench_load.py [--fill 1200000] [--rate 120] [--records 100]
                                         [--seconds 300] [--interval 60]
                                         [--modes child,thread,off]

On a throwaway PostgreSQL database (MODELMON_TEST_DATABASE_URL or postgres@127.0.0.1:5432):
the bench_jobs model and reference, and ``--fill`` predictions (half labeled) over the hour
that ends at the latest ``--interval`` boundary, stored through the ingest path's own steps
(bench/bench_jobs.py ``fill``) in ``--interval``-second buckets. Then one
`modelmon serve` (one process, jobs every ``--interval`` seconds over the last hour) takes an
open loop of ``--rate`` requests a second of ``--records`` predictions each, timestamped now,
for ``--seconds``: once per ``--modes`` entry, each a fresh process: its scheduler in its own
process (``child``, the default), inside the server (``thread``), and off; ``:unsettled``
after a mode runs its processes as before bootstrap.settle_heap, for an A/B in one run, and
``:workers=N`` serves with ``serve --workers N``, ``:young=N`` settles the processes with a
young-generation threshold of N instead of bootstrap's (options joined by ``+``).

Per run: requests sent and answered, the achieved rate, latency from when each request was
due (p50, p99, max), the server's CPU seconds over the run (utime + stime of its process and
its scheduler process, read from /proc; the child processes' share apart), the scheduler
ticks it logged, and each process's
garbage-collector pauses (a sitecustomize on the served processes' path records them). The
load average is printed around each run. Prints figures and a ``RESULTS`` line; asserts nothing. The
machines here are shared: compare the modes within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_jobs as bj  # noqa: E402
import httpx2  # noqa: E402
import numpy as np  # noqa: E402
from bench_ingest import wait_ready  # noqa: E402


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` and of its live children (serve's scheduler process, and its
    workers with ``--workers``)."""
    own = children = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(stat.parent.name) == pid:
            own += cpu
        elif int(fields[1]) == pid:
            children += cpu
    return own, children


def cpu_of(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live children."""
    return sum(cpu_split(pid))


TS, ID = "@TS@", "@ID@"  # placeholders each sent body gets its due time and request id in


def bodies(n: int, records: int, seed: int) -> list[bytes]:
    """``n`` distinct request bodies of ``records`` predictions of the bench_jobs model, with
    placeholders for the timestamp and the request's id (see ``stamp``)."""
    out = []
    for b in range(n):
        d = bj.generate(records, 10_000 + seed * 100_000 + b, current=True)
        names = bj.category_names(d["cats"])
        recs = []
        for i in range(records):
            features = {f: (None if np.isnan(d["x"][i, j]) else float(d["x"][i, j]))
                        for j, f in enumerate(bj.NUMERIC)}
            features.update({c: names[i, j] for j, c in enumerate(bj.CATEGORICAL)})
            recs.append({"model": "bench", "version": "v1",
                         "prediction_id": f"{ID}-{i}", "timestamp": TS,
                         "features": features, "cohorts": {"region": bj.REGIONS[
                             int(d["region"][i])]},
                         "prediction": {"score": float(d["score"][i])}})
        out.append(json.dumps({"records": recs}).encode())
    return out


def stamp(template: bytes, request: str) -> bytes:
    """A template body with its records timestamped now and their ids made unique to
    ``request``: two byte replacements, so the load generator's cost per request is small
    beside the server's (building 12,000 records a second in Python took most of a core)."""
    now = datetime.now(UTC).isoformat().encode()
    return template.replace(TS.encode(), now).replace(ID.encode(), request.encode())


MODES = ("child", "thread", "off")  # MODELMON_SCHEDULER_PROCESS, or the scheduler off
# Put on the served processes' path (serve, and its scheduler's worker): each records its
# collector's pauses, a line each; with MODELMON_BENCH_UNSETTLED set, it runs
# as the code before bootstrap.settle_heap (nothing frozen, Python's default thresholds);
# with MODELMON_BENCH_YOUNG, settle_heap sets that young threshold instead of its own.
SITE = """
import gc, os, time
_UNSETTLED = os.environ.get("MODELMON_BENCH_UNSETTLED")
_YOUNG = os.environ.get("MODELMON_BENCH_YOUNG")
if _UNSETTLED or _YOUNG:  # settle_heap a no-op, or its young threshold another, once
    import importlib.abc, importlib.machinery, sys  # app.bootstrap loads (not imported
                                                    # here: serve sets up prometheus_client's
                                                    # directory first)
    class _Unsettle(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "app.bootstrap":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                if _UNSETTLED:
                    module.settle_heap = lambda: None
                if _YOUNG:
                    module.GC_YOUNG_THRESHOLD = int(_YOUNG)
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, _Unsettle())
_out = open(os.path.join(os.environ["MODELMON_BENCH_GC_DIR"], f"{os.getpid()}.txt"), "a",
            buffering=1)  # a line a pause, written as it ends: the server dies by its signal
_start = [0.0]
def _on_gc(phase, info):
    if phase == "start":
        _start[0] = time.perf_counter()
    else:
        _out.write(f"{info['generation']} {time.perf_counter() - _start[0]:.6f} {time.time():.3f} "
                   f"{gc.get_freeze_count()} {gc.get_threshold()[0]}\\n")
gc.callbacks.append(_on_gc)
"""
WARMUP = 30  # seconds of the open loop left out of the steady p99


def serve(url: str, port: int, interval: int, spec: str, log_path: Path,
          gc_dir: Path | None = None) -> subprocess.Popen:
    """One `modelmon serve` for ``spec`` (module docstring), ready; ``gc_dir`` (a fresh
    temporary directory when None) receives its processes' collector pauses."""
    spec, _, variant = spec.partition(":")
    mode, _, slots = spec.partition("/")
    options = dict(v.partition("=")[::2] for v in variant.split("+") if v)
    gc_dir = gc_dir or Path(tempfile.mkdtemp(prefix="modelmon-bench-gc-"))
    (gc_dir / "sitecustomize.py").write_text(SITE)
    env = {**os.environ, **({"MODELMON_INGEST_SLOTS": slots} if slots else {}),
           **({"MODELMON_BENCH_UNSETTLED": "1"} if "unsettled" in options else {}),
           **({"MODELMON_BENCH_YOUNG": options["young"]} if "young" in options else {}),
           "PYTHONPATH": os.pathsep.join([str(gc_dir), str(ROOT)]),
           "MODELMON_BENCH_GC_DIR": str(gc_dir),
           "MODELMON_DATABASE_URL": url, "MODELMON_LOG_LEVEL": "info",
           "MODELMON_SCHEDULER_ENABLED": "false" if mode == "off" else "true",
           "MODELMON_SCHEDULER_PROCESS": "thread" if mode == "off" else mode,
           "MODELMON_JOB_INTERVAL_SECONDS": str(interval), "MODELMON_JOB_WINDOW_SECONDS": "3600"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port),
                                 "--workers", options.get("workers", "1")],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return wait_ready(proc, port)


def open_loop(port: int, rate: float, seconds: float, records: int, seed: int
              ) -> dict[str, Any]:
    """Requests due every 1/rate s for ``seconds``, sent whatever the answers. Bodies come from
    a pool of distinct templates built before the clock starts, each stamped when sent."""
    n = int(rate * seconds)
    pool_size = max(1, min(n, int(2 * rate)))
    templates = bodies(pool_size, records, seed)
    latencies: list[tuple[float, float]] = []  # (due after start, latency)
    errors: list[str] = []
    local = threading.local()

    stored: list[float] = []  # due after start, of the requests answered 200

    def send(due: float, body: bytes) -> None:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                                        headers={"content-type": "application/json"})
        try:
            r = c.post("/v1/predictions", content=body)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:100]}")
            else:
                stored.append(due - start)
        except httpx2.HTTPError as exc:
            errors.append(repr(exc)[:100])
        latencies.append((due - start, time.perf_counter() - due))

    start = time.perf_counter() + 0.5
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(n):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            pool.submit(send, due, stamp(templates[i % pool_size], f"s{seed}-{i}"))
    elapsed = time.perf_counter() - start
    lat = np.sort(np.array([x for _, x in latencies]))
    # past the first WARMUP seconds: cold caches and the start-up tick left out
    steady = np.array([x for at, x in latencies if at >= WARMUP])
    return {"sent": n, "answered": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "achieved_rate": len(latencies) / elapsed,
            "stored_rate": len(stored) / elapsed,
            "p50_ms": float(np.quantile(lat, 0.5) * 1000),
            "p99_ms": float(np.quantile(lat, 0.99) * 1000), "max_ms": float(lat[-1] * 1000),
            "p99_steady_ms": float(np.quantile(steady, 0.99) * 1000) if steady.size else None}


def collector_pauses(gc_dir: Path, since: float, until: float) -> dict[str, Any]:
    """Per process (the server first, by pid), its collector's pauses between the wall-clock
    times ``since`` and ``until``, by generation: count, total and longest seconds, and the
    objects the process had frozen."""
    out = {}
    for path in sorted(gc_dir.glob("*.txt"), key=lambda p: int(p.stem)):
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        pauses = [(int(g), float(x)) for g, x, at, *_ in lines if since <= float(at) <= until]
        if lines:
            out[f"{path.stem} frozen"] = {"objects": int(lines[-1][3]),
                                          "young_threshold": int(lines[-1][4])}
        out[path.stem] = {str(g): {"n": len(d), "total_s": round(sum(d), 3),
                                   "max_ms": round(max(d) * 1000, 1)}
                          for g in (0, 1, 2) if (d := [x for gen, x in pauses if gen == g])}
    return out


def run(url: str, args: argparse.Namespace, mode: str, seed: int) -> dict[str, Any]:
    port = 19000 + (os.getpid() + seed) % 1000
    log_path = Path(f"/tmp/modelmon-bench-load-{seed}.log")
    gc_dir = Path(tempfile.mkdtemp(prefix="modelmon-bench-gc-"))
    proc = serve(url, port, args.interval, mode, log_path, gc_dir)
    try:
        before, load_before, since = cpu_split(proc.pid), load(), time.time()
        out = open_loop(port, args.rate, args.seconds, args.records, seed)
        until = time.time()
        after = cpu_split(proc.pid)
        out["server_cpu_s"] = sum(after) - sum(before)
        out["children_cpu_s"] = after[1] - before[1]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    ticks = [line for line in log_path.read_text(errors="replace").splitlines()
             if '"event": "tick"' in line or "tick:" in line]
    out.update(scheduler=mode, ticks=len(ticks), load_before=load_before,
               load_after=load(), collector=collector_pauses(gc_dir, since, until))
    print(f"scheduler {mode:6}: {out['answered']}/{out['sent']} "
          f"requests, {out['achieved_rate']:.1f}/s answered, {out['stored_rate']:.1f}/s stored "
          f"({args.rate}/s due), p50 "
          f"{out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms (after {WARMUP} s: "
          f"{out['p99_steady_ms'] or 0:.0f} ms), max {out['max_ms']:.0f} ms, "
          f"server {out['server_cpu_s']:.1f} CPU-s ({out['server_cpu_s'] / args.seconds:.2f} "
          f"of a core; its child processes {out['children_cpu_s']:.1f} CPU-s), "
          f"{out['ticks']} ticks, {out['errors']} errors; load "
          f"{out['load_before']} -> {out['load_after']}", flush=True)
    for pid, gens in out["collector"].items():
        print(f"  collector, process {pid}: " + ", ".join(
            f"{g}: {v}" if "frozen" in pid else
            f"gen {g}: {v['n']} ({v['total_s']:.2f} s, longest {v['max_ms']:.0f} ms)"
            for g, v in gens.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fill", type=int, default=1_200_000)
    ap.add_argument("--rate", type=float, default=120.0)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--modes", default=",".join(MODES),
                    help="scheduler modes to run, in order (child: its own process, the "
                    "default; thread: inside the server; off), each optionally followed by "
                    "/N for MODELMON_INGEST_SLOTS=N (child/40), and by ':' and '+'-joined "
                    "options: unsettled for the processes as before bootstrap.settle_heap, "
                    "workers=N for `serve --workers N`, young=N for settle_heap's young "
                    "threshold (off:unsettled, child:workers=2, child:young=700)")
    args = ap.parse_args()
    bj.INTERVAL = args.interval  # the fill's buckets are the served jobs' buckets
    url = bj.create_database()
    try:
        from app.evaluation.windows import aligned_end

        end = aligned_end(datetime.now(UTC), args.interval)
        t = time.perf_counter()
        filled = bj.fill(url, args.fill, end)
        print(f"filled {args.fill:,} predictions over the hour to {end.isoformat()} in "
              f"{time.perf_counter() - t:.0f} s; load {load()}", flush=True)
        runs = {mode: run(url, args, mode, seed)
                for seed, mode in enumerate(args.modes.split(","), start=1)}
        for spec, on in runs.items():
            base, _, variant = spec.partition(":")
            mode, _, slots = base.partition("/")
            off = runs.get(("off/" + slots if slots else "off")
                           + (":" + variant if variant else ""))
            if mode != "off" and off is not None:
                print(f"{spec} / off: achieved rate "
                      f"{on['achieved_rate'] / off['achieved_rate']:.2f}, p99 "
                      f"{on['p99_ms'] / max(off['p99_ms'], 1e-9):.2f}x, server CPU "
                      f"{on['server_cpu_s'] / max(off['server_cpu_s'], 1e-9):.2f}x")
        print("RESULTS " + json.dumps({"fill": {k: v for k, v in filled.items()
                                                if isinstance(v, (int, float, str))},
                                       **runs, "args": vars(args),
                                       "id": uuid.uuid4().hex[:8]}))
    finally:
        bj.drop_database(url)


if __name__ == "__main__":
    main()
