"""`modelmon serve` runs its scheduled jobs in a process of its own (the default,
MODELMON_SCHEDULER_PROCESS=child): a `modelmon worker` child at a lower CPU priority whose
ticks show on the server's /metrics, started again when it dies, gone when the server is
killed; with MODELMON_SCHEDULER_PROCESS=thread the jobs run inside the serving process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from tests.cli.test_serve_workers import children_of
from tests.conftest import ROOT, free_port
from tests.deploy.deploy_support import wait_for
from tests.helpers import wait_ready


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def nice_of(pid: int) -> int:
    return int(_stat(pid)[16])  # field 19 of proc(5), counted after the command


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def ticks(url: str) -> float:
    text = httpx2.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(
        r'^modelmon_scheduler_ticks_total\{outcome="success"\} (\S+)$', text, flags=re.M))


def _serve(tmp_path: Path, process: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MODELMON_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}",
           "MODELMON_SCHEDULER_ENABLED": "true", "MODELMON_SCHEDULER_PROCESS": process,
           "MODELMON_JOB_INTERVAL_SECONDS": "1", "MODELMON_LOG_LEVEL": "warning"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return proc, url


def _worker_children(pid: int) -> list[int]:
    return [c for c in children_of(pid) if alive(c)
            and b"--exit-with-parent" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_the_jobs_run_in_a_lower_priority_child_that_is_restarted_and_dies_with_the_server(
        tmp_path: Path) -> None:
    proc, url = _serve(tmp_path, "child")
    child = None
    try:
        (child,) = wait_for(lambda: _worker_children(proc.pid), "the scheduler process")
        assert nice_of(child) == min(nice_of(proc.pid) + 10, 19)
        # the child's ticks are counted on the server's /metrics
        wait_for(lambda: ticks(url) >= 2, "ticks of the child on the server's /metrics", 60)
        os.kill(child, signal.SIGKILL)
        restarted = wait_for(lambda: [c for c in _worker_children(proc.pid) if c != child],
                             "the scheduler process started again", 60)
        seen = ticks(url)
        wait_for(lambda: ticks(url) > seen, "ticks after the restart", 60)
        child = restarted[0]
        proc.kill()  # no chance to stop its child: the child notices on its own
        proc.wait(timeout=30)
        wait_for(lambda: not alive(child), "the orphaned scheduler process to exit", 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)
            pytest.fail("the scheduler process outlived the server")


def test_thread_mode_runs_the_jobs_inside_the_serving_process(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path, "thread")
    try:
        wait_for(lambda: ticks(url) >= 2, "ticks of the in-process scheduler", 60)
        assert _worker_children(proc.pid) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
