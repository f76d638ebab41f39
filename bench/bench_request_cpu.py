"""What one small prediction request costs the server and PostgreSQL, in CPU.

    .venv/bin/python bench/bench_request_cpu.py [--requests 2000] [--clients 2]
                                                [--records 100] [--fill 20000]
                                                [--py-spy /path/to/py-spy --profile out.txt]

On a throwaway PostgreSQL database (MODELMON_TEST_DATABASE_URL or postgres@127.0.0.1:5432):
the bench_jobs model (20 numeric and 3 categorical features, a 10,000-row reference, so each
request is folded into drift bins, KS slots and the PCA and CBPE sums) with ``--fill``
predictions, then one `modelmon serve` (scheduler off) takes ``--requests`` POSTs of
``--records`` predictions from ``--clients`` closed-loop clients. Prints the requests/s and
the CPU per request of the server process and of the database's backends (from /proc, so
the figures hold on a busy machine better than wall time); compare two commits by running
this from each checkout in turn. With ``--py-spy``, the server is sampled (``--gil``: only
the thread holding the interpreter) into a raw collapsed-stack file ``--profile``. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_jobs as bj  # noqa: E402
import bench_load as bl  # noqa: E402
import httpx2  # noqa: E402
from bench_ingest_cpu import backend_cpu  # noqa: E402

from app.evaluation.windows import aligned_end  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--fill", type=int, default=20_000)
    ap.add_argument("--py-spy", default=None, help="path of a py-spy executable")
    ap.add_argument("--profile", default="/tmp/modelmon-request-cpu.raw")
    args = ap.parse_args()
    bj.INTERVAL = 60
    url = bj.create_database()
    db = url.rsplit("/", 1)[1]
    try:
        bj.fill(url, args.fill, aligned_end(datetime.now(UTC), 60))
        port = 19500 + threading.get_native_id() % 400
        # a closed loop on a fast day passes the per-caller limit (200/s): measure the
        # requests, not the limiter's 429s
        os.environ["MODELMON_RATE_LIMIT_REQUESTS_PER_SECOND"] = "0"
        proc = bl.serve(url, port, 60, "off", Path("/tmp/modelmon-bench-request-cpu.log"))
        templates = bl.bodies(200, args.records, 1)
        headers = {"content-type": "application/json"}

        def post(c: httpx2.Client, i: int) -> None:
            r = c.post("/v1/predictions", content=bl.stamp(templates[i % 200], f"r{i}"))
            assert r.status_code == 200, r.text[:200]

        def client(k: int) -> None:
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                               headers=headers) as c:
                for i in range(k, args.requests, args.clients):
                    post(c, i)

        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                           headers=headers) as c:
            for i in range(50):  # warm caches
                post(c, 10**6 + i)
        spy = None if args.py_spy is None else subprocess.Popen(
            [args.py_spy, "record", "-p", str(proc.pid), "-r", "200", "--gil", "-f", "raw",
             "-o", args.profile, "-d", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        admin = bj.dsn(bj.admin_url())
        s0, p0, t0 = bl.cpu_of(proc.pid), backend_cpu(admin, db), time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server, pg = bl.cpu_of(proc.pid) - s0, backend_cpu(admin, db) - p0
        n = args.requests
        print(f"{n} requests of {args.records}, {args.clients} clients: {n / wall:.1f} "
              f"requests/s, server {1000 * server / n:.2f} ms CPU a request, PostgreSQL "
              f"{1000 * pg / n:.2f} ms; load {bl.load()}", flush=True)
        if spy is not None:
            spy.wait()
        proc.terminate()
        proc.wait(30)
    finally:
        bj.drop_database(url)


if __name__ == "__main__":
    main()
