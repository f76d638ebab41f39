"""Memory of a large weights upload: a ~1 GB .safetensors file posted to `modelmon serve`;
the server's resident memory before the upload and its peak (VmHWM) after it.

    .venv/bin/python bench/bench_weights_upload.py [--gib 1.0]

Runs against a throwaway SQLite file (the weights path is the same on Postgres: the file is
streamed to disk, then read one tensor at a time in chunks). Not part of CI: it writes a
1 GB file. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_safetensors(path: Path, total_bytes: int, tensor_bytes: int = 64 * 2**20) -> int:
    """float32 tensors of 64 MiB each, written without holding more than one in memory."""
    n = max(1, total_bytes // tensor_bytes)
    elems = tensor_bytes // 4
    header, offset = {}, 0
    for i in range(n):
        header[f"layer{i}.weight"] = {"dtype": "F32", "shape": [elems // 1024, 1024],
                                      "data_offsets": [offset, offset + tensor_bytes]}
        offset += tensor_bytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _ in range(n):
            w = rng.standard_normal(elems, dtype=np.float32)
            w[: elems // 4] = 0.0
            f.write(w.tobytes())
    return n


def mem_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        n = write_safetensors(path, int(args.gib * 2**30))
        size = path.stat().st_size
        port = 18500 + os.getpid() % 400
        env = {**os.environ, "MODELMON_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
               "MODELMON_SCHEDULER_ENABLED": "false", "MODELMON_LOG_LEVEL": "warning"}
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                                cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx2.HTTPError:
                    time.sleep(0.1)
            with httpx2.Client(base_url=url, timeout=600) as c:
                c.post("/v1/models", json={"name": "big", "task": "regression"})
                c.post("/v1/models/big/versions", json={"version": "v1"})
                before = mem_kib(proc.pid, "VmRSS")
                t = time.perf_counter()
                with open(path, "rb") as f:
                    r = c.post("/v1/models/big/versions/v1/weights", content=f,
                               headers={"content-type": "application/octet-stream"})
                elapsed = time.perf_counter() - t
            peak = mem_kib(proc.pid, "VmHWM")
            assert r.status_code == 201, r.text
            overall = r.json()["overall"]
            print(f"file: {size / 2**30:.2f} GiB, {n} float32 tensors of 64 MiB")
            print(f"upload + stats: {elapsed:.1f} s ({size / 2**20 / elapsed:.0f} MiB/s), "
                  f"overall sparsity {overall['sparsity']:.3f}")
            print(f"server RSS before: {before / 1024:.0f} MiB, peak: {peak / 1024:.0f} MiB, "
                  f"growth: {(peak - before) / 1024:.0f} MiB "
                  f"({(peak - before) * 1024 / size:.3f} x the file)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
