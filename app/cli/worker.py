"""``modelmon worker``: the scheduler alone, with its own /metrics, for deployments that run
the jobs apart from the API replicas (which may then set MODELMON_SCHEDULER_ENABLED=false)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from app.cli.console import add_json, json_logs
from app.cli.errors import CliError
from app.settings import get_settings


def run(args: argparse.Namespace) -> int:
    """SIGTERM or SIGINT stops it: no further window starts, the running one has
    MODELMON_SHUTDOWN_TIMEOUT_SECONDS to finish."""
    from app.bootstrap import bootstrap, settle_heap, start_logging
    from app.observability.exposition import start_metrics_server

    settings = json_logs(get_settings(), args.json)
    start_logging(settings)
    log = logging.getLogger("modelmon.worker")
    host = args.metrics_host or settings.worker_metrics_host
    port = settings.worker_metrics_port if args.metrics_port is None else args.metrics_port
    service = bootstrap(settings, run_scheduler=True)
    scheduler = service.scheduler
    assert scheduler is not None
    stop = _stop_on_signals(log)
    if args.exit_with_parent:
        from app.cli.scheduler_child import exit_with_parent

        exit_with_parent(stop)
    try:
        server = (start_metrics_server(service.registry, host, port, settings.metrics_token)
                  if port else None)
    except OSError as err:
        raise CliError(f"cannot serve /metrics on {host}:{port} ({err.strerror}); give each "
                       "worker on a host its own --metrics-port (MODELMON_WORKER_METRICS_PORT; "
                       "0 turns it off)") from None
    settle_heap()
    try:
        if not scheduler.start():
            print("another process runs the scheduler for this SQLite database", file=sys.stderr)
            return 1
        log.info("worker started", extra={"event": "start"})
        stop.wait()
        scheduler.shutdown(settings.shutdown_timeout_seconds)
    finally:
        if server is not None:
            server.shutdown()
        service.engine.dispose()
    return 0


def _stop_on_signals(log: logging.Logger) -> threading.Event:
    """An event that SIGTERM or SIGINT sets, each logged as it comes."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name,
                 extra={"event": "shutdown", "signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def add_parser(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run the scheduled jobs in the foreground, with "
                            "their own /metrics")
    worker.add_argument("--metrics-host", help="bind address of /metrics "
                        "(MODELMON_WORKER_METRICS_HOST, default 127.0.0.1)")
    worker.add_argument("--metrics-port", type=int, help="port of /metrics "
                        "(MODELMON_WORKER_METRICS_PORT, default 8001; 0 turns it off)")
    worker.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started it exits (how `modelmon "
                        "serve` runs its scheduler process)")
    add_json(worker, "log one JSON object a line, whatever stderr is (MODELMON_LOG_FORMAT="
             "json)")
    worker.set_defaults(func=run)
