"""``modelmon serve``: migrate the database, then serve the API (and, unless turned off, the
scheduled jobs) with uvicorn, in one process or N behind one port."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from app.cli.console import add_json, json_logs
from app.settings import Settings, get_settings


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.bootstrap import migrate, start_logging
    from app.main import create_app

    settings = json_logs(get_settings(), args.json)
    start_logging(settings)
    if not args.no_migrate:
        revision = migrate(settings)
        print(json.dumps({"revision": revision}) if args.json else
              f"database at revision {revision}")
    if args.host:  # the bind address decides whether tokens are required (MODELMON_AUTH)
        os.environ["MODELMON_HOST"] = args.host
        settings = settings.model_copy(update={"host": args.host})
    options = uvicorn_options(settings, args.port, connections=fit_open_files(settings))
    if args.workers > 1:
        # N processes behind one port; their counters add up on /metrics (see
        # app/observability/metrics.py)
        _multiprocess_dir()
        uvicorn.run("app.main:create_served_app", factory=True, workers=args.workers,
                    **options)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


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
                       help="processes serving the port (default 1); each runs the scheduler "
                       "too, which is safe: a window is computed once")
    serve.add_argument("--no-migrate", action="store_true",
                       help="do not migrate first (when a one-shot migrate step runs it)")
    add_json(serve, "log one JSON object a line, whatever stderr is (MODELMON_LOG_FORMAT="
             "json)")
    serve.set_defaults(func=run)
