"""The README's screenshot of a model page, made from the demo.

    .venv/bin/python scripts/screenshot-pages.py [--out docs/images/model-page.png]

Serves modelmon on a throwaway SQLite file on a free loopback port, runs `modelmon demo` with
its incident from the start (x0 and x1 drift, the scores become over-confident), and has
Debian's headless Chromium (scripts/install-browser.sh installs it when missing) take a
screenshot of the serving version's page over the last hour. Stops the server it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"modelmon serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("modelmon serve did not get ready")


def chromium() -> str:
    if not shutil.which("chromium"):
        subprocess.run(["sh", str(ROOT / "scripts" / "install-browser.sh")], check=True)
    return shutil.which("chromium") or sys.exit("chromium is still missing")


def shoot(url: str, out: Path, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--disable-background-networking",
                    "--no-first-run", f"--window-size=1400,{height}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "model-page.png")
    ap.add_argument("--duration", default="10", help="seconds of demo traffic")
    ap.add_argument("--height", type=int, default=1100, help="window height, pixels")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MODELMON_DATABASE_URL": f"sqlite:///{tmp}/modelmon.db",
               "MODELMON_LOG_LEVEL": "warning", "MODELMON_SCHEDULER_ENABLED": "false"}
        subprocess.run([BIN / "modelmon", "migrate"], env=env, check=True, cwd=tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([BIN / "modelmon", "serve", "--port", str(port)], env=env,
                                  cwd=tmp, stdout=subprocess.DEVNULL)
        try:
            wait_ready(url, server)
            subprocess.run([BIN / "modelmon", "demo", "--url", url, "--duration",
                            args.duration, "--incident-after", "0", "--speed", "4",
                            "--batch-size", "100"], env=env, check=True, cwd=tmp,
                           stdout=subprocess.DEVNULL)
            now = datetime.now(UTC)
            window = urlencode({"start": (now - timedelta(hours=1)).isoformat(),
                                "end": (now + timedelta(minutes=5)).isoformat()})
            shoot(f"{url}/ui/models/demo-fraud/versions/v2?{window}", args.out, args.height)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
