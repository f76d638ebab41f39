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


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    if not args.no_migrate:
        _migrate(args)
    if args.host:  # the bind address decides whether tokens are required (MODELMON_AUTH)
        os.environ["MODELMON_HOST"] = args.host
        settings = settings.model_copy(update={"host": args.host})
    options = {"host": settings.host, "port": args.port or settings.port,
               "log_level": settings.log_level, "timeout_graceful_shutdown": 10,
               "limit_concurrency": settings.max_connections, "timeout_keep_alive": 5}
    if args.workers > 1:
        # N processes behind one port; their counters add up on /metrics (see app/main.py)
        _multiprocess_dir()
        uvicorn.run("app.main:create_app", factory=True, workers=args.workers, **options)
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


def _worker(_args: argparse.Namespace) -> int:
    """The scheduler alone, in the foreground: for deployments that run jobs apart from the
    API replicas (which may then set MODELMON_SCHEDULER_ENABLED=false)."""
    import logging

    from app.jobs.scheduler import JobScheduler
    from app.storage.db import make_engine
    from app.storage.partitions import PartitionManager

    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = make_engine(settings)
    scheduler = JobScheduler(engine, settings, PartitionManager(engine), blocking=True)
    try:
        if not scheduler.start():
            print("another process runs the scheduler for this SQLite database", file=sys.stderr)
            return 1
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        engine.dispose()
    return 0


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelmon", description="Production model monitoring.")
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
    worker = sub.add_parser("worker", help="run the scheduled jobs in the foreground")
    worker.set_defaults(func=_worker)
    from app.report_cli import add_parser as add_report
    from app.tokens_cli import add_parsers as add_tokens

    add_tokens(sub)

    add_report(sub)
    from app.demo import add_parser as add_demo

    add_demo(sub)
    mig = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    mig.set_defaults(func=_migrate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
