"""``modelmon serve``: migrate the database, then serve the API with uvicorn, in one process or
N behind one port, and (unless turned off) the scheduled jobs in a process of their own
(app/cli/scheduler_child.py) or inside the serving process(es)."""

from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Any

from app.cli.console import add_json, json_logs
from app.settings import Settings, get_settings


def run(args: argparse.Namespace) -> int:
    from app.observability.logs import configure_logging

    settings = json_logs(get_settings(), args.json)
    configure_logging(settings.log_format, settings.log_level)
    child = settings.scheduler_enabled and scheduler_in_child(settings)
    if child or args.workers > 1:
        # several processes behind one /metrics: their counters add up there (app/
        # observability/metrics.py); set before anything imports prometheus_client
        _multiprocess_dir()
    from app.bootstrap import migrate

    if not args.no_migrate:
        revision = migrate(settings)
        print(json.dumps({"revision": revision}) if args.json else
              f"database at revision {revision}")
    if args.host:  # the bind address decides whether tokens are required (MODELMON_AUTH)
        os.environ["MODELMON_HOST"] = args.host
        settings = settings.model_copy(update={"host": args.host})
    options = uvicorn_options(settings, args.port, connections=fit_open_files(settings))
    jobs = None
    if child:
        from app.cli.scheduler_child import SchedulerProcess

        os.environ["MODELMON_SCHEDULER_ENABLED"] = "false"  # for the serving processes
        settings = settings.model_copy(update={"scheduler_enabled": False})
        jobs = SchedulerProcess(settings.scheduler_nice, settings.shutdown_timeout_seconds)
        jobs.start()
    if jobs is None:
        _serve(settings, options, args.workers, None)
        return 0
    # uvicorn raises the SIGTERM or SIGINT it shut down on again once it is done; with these
    # handlers that ends nothing, so the scheduler process is waited for before exiting
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        _serve(settings, options, args.workers, jobs)
    finally:
        code = jobs.stop()
    return 1 if code else 0  # 1: the scheduler abandoned a window at shutdown


def scheduler_in_child(settings: Settings) -> bool:
    """Whether `serve` runs the jobs in a process of their own (MODELMON_SCHEDULER_PROCESS);
    never for an in-memory SQLite database, which another process cannot open."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    return settings.scheduler_process == "child" and not in_memory


def _serve(settings: Settings, options: dict[str, Any], workers: int,
           jobs: Any) -> None:
    """uvicorn's own run (one server, or N behind one socket), with the scheduler process
    told to stop as soon as the server begins to shut down, so the running window and the
    in-flight requests drain together within MODELMON_SHUTDOWN_TIMEOUT_SECONDS."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from app.cli.scheduler_child import when_set
    from app.main import create_app

    if workers > 1:
        config = uvicorn.Config("app.main:create_served_app", factory=True, workers=workers,
                                **options)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        if jobs is not None:
            when_set(supervisor.should_exit.is_set, jobs.signal_stop)
        supervisor.run()
        return
    config = uvicorn.Config(create_app(settings, settle=True), **options)
    server = uvicorn.Server(config)
    if jobs is not None:
        when_set(lambda: server.should_exit, jobs.signal_stop)
    server.run()
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the server could not start


def uvicorn_options(settings: Settings, port: int | None,
                    connections: int | None = None) -> dict[str, Any]:
    """How uvicorn serves the app. log_config=None: uvicorn keeps the logging configured
    already (JSON or text, one line per request from the app instead of uvicorn's access
    log). proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from any client
    on 127.0.0.1 as its address; the app trusts only MODELMON_TRUSTED_PROXIES
    (app/api/guards.py). http: the protocol that sheds idle connections first and keeps
    /healthz answering (app/api/connections.py), for ``connections`` open at once (default
    MODELMON_MAX_CONNECTIONS); the listen backlog no larger, so one burst of accepted
    connections cannot shed one of its own before its request is read."""
    from app.api.connections import protocol

    connections = connections or settings.max_connections
    return {"host": settings.host, "port": port or settings.port,
            "log_level": settings.log_level, "log_config": None, "access_log": False,
            "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
            "http": protocol(settings, connections), "backlog": min(connections, 2048),
            "timeout_keep_alive": settings.idle_timeout_seconds, "proxy_headers": False}


# Files a serving process needs besides its connections: the database pool and its overflow,
# uploads, logs, the metrics files of --workers, libraries.
SPARE_FILES = 256


def fit_open_files(settings: Settings) -> int:
    """The connections one process can hold: its soft open-file limit (RLIMIT_NOFILE) raised
    towards the hard limit when MODELMON_MAX_CONNECTIONS needs more, and the connections
    lowered (with a warning) when even the hard limit does not fit them. --workers
    processes inherit the raised limit."""
    import logging
    import resource

    wanted = settings.max_connections + SPARE_FILES + 2 * settings.db_pool_size
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logging.getLogger("modelmon").warning("could not raise the open-file limit "
                                                  "from %d: %s", soft, exc)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return settings.max_connections
    fits = max(10, soft - (wanted - settings.max_connections))
    logging.getLogger("modelmon").warning(
        "open-file limit %d (hard %s) fits %d connections, not MODELMON_MAX_CONNECTIONS=%d; "
        "raise it (ulimit -n, LimitNOFILE=, the container's nofile)", soft, hard, fits,
        settings.max_connections)
    return fits


def _multiprocess_dir() -> None:
    """PROMETHEUS_MULTIPROC_DIR for the serving and scheduler processes, emptied: files left
    by an earlier run would be added to this one's counters. prometheus_client reads it once,
    when imported: a process that imported it before would keep its counters to itself."""
    import sys
    import tempfile
    from pathlib import Path

    if "prometheus_client" in sys.modules:
        raise RuntimeError("PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is "
                           "imported")

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for f in Path(path).glob("*.db"):
            f.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelmon-metrics-")


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="migrate the database, then serve the API")
    serve.add_argument("--host", help="bind address (MODELMON_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MODELMON_PORT, default 8000)")
    serve.add_argument("--workers", type=_positive, default=1,
                       help="processes serving the port (default 1), beside one scheduler "
                       "process (MODELMON_SCHEDULER_PROCESS=child, the default; with thread, "
                       "each runs the scheduler, which is safe: a window is computed once)")
    serve.add_argument("--no-migrate", action="store_true",
                       help="do not migrate first (when a one-shot migrate step runs it)")
    add_json(serve, "log one JSON object a line, whatever stderr is (MODELMON_LOG_FORMAT="
             "json)")
    serve.set_defaults(func=run)
