"""The ``modelmon`` command."""

from __future__ import annotations

import argparse
import os
import sys

from app.settings import get_settings


def _migrate(_args: argparse.Namespace) -> int:
    from app.storage import migrate
    from app.storage.db import make_engine

    engine = make_engine(get_settings())
    migrate.upgrade(engine)
    print(f"database at revision {migrate.current_revision(engine)}")
    engine.dispose()
    return 0


def _logging() -> None:
    from app.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    _logging()
    if not args.no_migrate:
        _migrate(args)
    if args.host:  # the bind address decides whether tokens are required (MODELMON_AUTH)
        os.environ["MODELMON_HOST"] = args.host
        settings = settings.model_copy(update={"host": args.host})
    # log_config=None: uvicorn keeps the logging configured above (JSON or text, one line per
    # request from the app instead of uvicorn's access log).
    options = {"host": settings.host, "port": args.port or settings.port,
               "log_level": settings.log_level, "log_config": None, "access_log": False,
               "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
               "limit_concurrency": settings.max_connections, "timeout_keep_alive": 5}
    if args.workers > 1:
        # N processes behind one port; their counters add up on /metrics (see
        # app/observability/metrics.py)
        _multiprocess_dir()
        uvicorn.run("app.main:create_served_app", factory=True, workers=args.workers,
                    **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


def _multiprocess_dir() -> None:
    """PROMETHEUS_MULTIPROC_DIR for the worker processes, emptied: files left by an earlier
    run would be added to this one's counters."""
    import tempfile
    from pathlib import Path

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for f in Path(path).glob("*.db"):
            f.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelmon-metrics-")


def _worker(args: argparse.Namespace) -> int:
    """The scheduler alone, with its own /metrics: for deployments that run jobs apart from
    the API replicas (which may then set MODELMON_SCHEDULER_ENABLED=false). SIGTERM or SIGINT
    stops it: no further window starts, the running one has MODELMON_SHUTDOWN_TIMEOUT_SECONDS
    to finish."""
    import logging
    import signal
    import threading

    from app.jobs.scheduler import JobScheduler
    from app.observability.exposition import start_metrics_server
    from app.observability.metrics import ServiceMetrics, build_registries
    from app.storage.db import make_engine
    from app.storage.partitions import PartitionManager

    settings = get_settings()
    _logging()
    log = logging.getLogger("modelmon.worker")
    host = args.metrics_host or settings.worker_metrics_host
    port = settings.worker_metrics_port if args.metrics_port is None else args.metrics_port
    engine = make_engine(settings)
    exposed, registry = build_registries()
    hooks = ServiceMetrics(registry)
    scheduler = JobScheduler(engine, settings, PartitionManager(engine), hooks=hooks)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name,
                 extra={"event": "shutdown", "signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = (start_metrics_server(exposed, host, port, settings.metrics_token)
                  if port else None)
    except OSError as err:
        from app.api_client import CliError

        raise CliError(f"cannot serve /metrics on {host}:{port} ({err.strerror}); give each "
                       "worker on a host its own --metrics-port (MODELMON_WORKER_METRICS_PORT; "
                       "0 turns it off)") from None
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
        engine.dispose()
    return 0


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def main(argv: list[str] | None = None) -> int:
    from app import __version__

    parser = argparse.ArgumentParser(prog="modelmon", description="Production model monitoring.")
    parser.add_argument("--version", action="version", version=f"modelmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate the database, then serve the API")
    serve.add_argument("--host", help="bind address (MODELMON_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MODELMON_PORT, default 8000)")
    serve.add_argument("--workers", type=_positive, default=1,
                       help="processes serving the port (default 1); each runs the scheduler "
                       "too, which is safe: a window is computed once")
    serve.add_argument("--no-migrate", action="store_true",
                       help="do not migrate first (when a one-shot migrate step runs it)")
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run the scheduled jobs in the foreground, with "
                            "their own /metrics")
    worker.add_argument("--metrics-host", help="bind address of /metrics "
                        "(MODELMON_WORKER_METRICS_HOST, default 127.0.0.1)")
    worker.add_argument("--metrics-port", type=int, help="port of /metrics "
                        "(MODELMON_WORKER_METRICS_PORT, default 8001; 0 turns it off)")
    worker.set_defaults(func=_worker)
    from app.report_cli import add_parser as add_report
    from app.tokens_cli import add_parsers as add_tokens

    add_tokens(sub)

    add_report(sub)
    from app.demo import add_parser as add_demo
    from app.import_cli import add_parser as add_import

    add_demo(sub)
    add_import(sub)
    mig = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    mig.set_defaults(func=_migrate)
    args = parser.parse_args(argv)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command; an expected failure is one line on stderr and a non-zero exit code."""
    from app.api_client import CliError

    prefix = f"modelmon {args.command}"
    try:
        return args.func(args)
    except CliError as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if "sqlalchemy" in sys.modules:
            from sqlalchemy.exc import OperationalError

            if isinstance(err, OperationalError):
                from sqlalchemy.engine import make_url

                url = make_url(get_settings().database_url).render_as_string(hide_password=True)
                reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
                print(f"{prefix}: error: cannot use the database at {url} ({reason}); check "
                      "MODELMON_DATABASE_URL", file=sys.stderr)
                return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
