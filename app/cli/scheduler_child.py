"""The scheduled jobs of `modelmon serve` in a process of their own.

A tick is CPU work in Python (reading and merging an hour of summaries, deciding); inside the
serving process it holds the interpreter lock for milliseconds at a time, and the event loop,
which gives the lock up at every socket write and log line, waits for it again each time:
under load, requests queue behind the jobs. So `serve` starts `modelmon worker` as a child
at a lower CPU priority (MODELMON_SCHEDULER_NICE) instead, with the serving processes'
PROMETHEUS_MULTIPROC_DIR so its tick and job metrics appear on the same /metrics. The child
is started again if it dies, stops with the server (SIGTERM as soon as the server begins to
shut down, so both drain at once) and exits by itself if the server is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("modelmon.serve")

# Seconds before a dead scheduler process is started again, doubling to at most the last.
RESTART_BACKOFF = (1.0, 2.0, 5.0, 15.0, 60.0)


class SchedulerProcess:
    """Starts, watches and stops the `modelmon worker` child of one `serve`."""

    def __init__(self, nice: int, shutdown_timeout: float) -> None:
        self.nice = nice
        self.shutdown_timeout = shutdown_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._restarts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "MODELMON_SCHEDULER_ENABLED": "true"}
        nice = self.nice

        def lower_priority() -> None:  # runs in the child, before exec
            if nice:
                os.nice(nice)

        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--metrics-port", "0",
             "--exit-with-parent"], env=env, preexec_fn=lower_priority)

    def start(self) -> None:
        with self._lock:
            self.proc = self._spawn()
        log.info("scheduler process %d started (nice +%d)", self.proc.pid, self.nice,
                 extra={"event": "scheduler_process", "outcome": "started",
                        "pid": self.proc.pid})
        threading.Thread(target=self._watch, name="modelmon-scheduler-watch",
                         daemon=True).start()

    def _watch(self) -> None:
        """Start the child again when it exits while the server is not stopping."""
        while True:
            proc = self.proc
            assert proc is not None
            code = proc.wait()
            if self._stopping.is_set():
                self.exit_code = code
                return
            delay = RESTART_BACKOFF[min(self._restarts, len(RESTART_BACKOFF) - 1)]
            self._restarts += 1
            log.error("the scheduler process %d exited with code %d; starting it again in "
                      "%.0f s", proc.pid, code, delay,
                      extra={"event": "scheduler_process", "outcome": "exited",
                             "pid": proc.pid, "code": code})
            if self._stopping.wait(delay):
                self.exit_code = code
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._spawn()
            log.info("scheduler process %d started again", self.proc.pid,
                     extra={"event": "scheduler_process", "outcome": "restarted",
                            "pid": self.proc.pid})

    def signal_stop(self) -> None:
        """SIGTERM to the child: no further window starts, the running one has the shutdown
        timeout to finish (``modelmon worker``'s own shutdown)."""
        with self._lock:
            self._stopping.set()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """Stop the child and wait for it (the shutdown timeout and a margin, then SIGKILL).
        Returns its exit code: non-zero when it abandoned a window."""
        self.signal_stop()
        proc = self.proc
        if proc is None:
            return 0
        try:
            code = proc.wait(timeout=self.shutdown_timeout + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        return code


def when_set(flag: Callable[[], bool], action: Callable[[], None],
             poll_seconds: float = 0.2) -> None:
    """Call ``action`` once ``flag()`` turns true (a daemon thread polling it)."""
    def watch() -> None:
        stop = threading.Event()
        while not flag():
            stop.wait(poll_seconds)
        action()

    threading.Thread(target=watch, name="modelmon-shutdown-watch", daemon=True).start()


def exit_with_parent(stop: threading.Event, poll_seconds: float = 1.0) -> None:
    """Set ``stop`` when the process that started this one is gone (its parent becomes
    another process): a `serve` killed with SIGKILL leaves no scheduler behind."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(poll_seconds):
            if os.getppid() != parent:
                log.warning("the serving process %d is gone: stopping", parent,
                            extra={"event": "shutdown", "signal": "parent_exit"})
                stop.set()
                return

    threading.Thread(target=watch, name="modelmon-parent-watch", daemon=True).start()
