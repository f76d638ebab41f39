"""Engines and connections for both stores: Postgres (production) and SQLite (embedded)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from app.settings import Settings
from app.storage.hang import guard


def as_utc(ts: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC); everything leaving storage is aware
    UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite database file that does not exist (connecting would create it
    empty), else None: commands that only read or add to an existing database refuse it."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return None if os.path.isfile(url.database) else url.database


def make_engine(settings: Settings) -> Engine:
    """Build the engine with the timeouts that keep an unreachable database a fast 503."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={
                "timeout": settings.db_connect_timeout_seconds,
                "check_same_thread": False,
            },
        )
        ping_after_idle(engine)
        _configure_sqlite(engine, busy_timeout_ms=int(settings.db_statement_timeout_seconds * 1000))
        return engine
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            f"MODELMON_DATABASE_URL: unsupported database {url.get_backend_name()!r}; "
            "use postgresql+psycopg://... or sqlite:///..."
        )
    statement_ms = int(settings.db_statement_timeout_seconds * 1000)
    engine = create_engine(
        url,
        connect_args={
            "connect_timeout": max(1, int(round(settings.db_connect_timeout_seconds))),
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
            "application_name": f"modelmon:{os.getpid()}",
            # A peer that vanished (host down, partition) is noticed on idle pooled
            # connections within about a minute; a frozen one is app/storage/hang.py's.
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        },
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_connect_timeout_seconds,
    )
    guard(engine, hang_seconds=settings.db_hang_seconds)
    ping_after_idle(engine)
    return engine


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_after_idle(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """SQLAlchemy's ``pool_pre_ping``, but only for a connection that sat in the pool for
    more than ``idle_seconds``: a connection that was in use a moment ago is handed out as it
    is, sparing a round trip on every request of a busy service. One that fails its ping is
    replaced by the pool (DisconnectionError); a database that restarted within the idle bound
    fails the request's first statement instead, which the API answers with a 503 like any
    outage, and SQLAlchemy then invalidates the pool's older connections."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so that concurrent writers queue instead of
    failing half-way (pysqlite's deferred BEGIN lets two writers both read, then one loses)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def clock(engine: Engine) -> datetime:
    """The database's time (PostgreSQL's clock_timestamp(); SQLite has no clock of its own and
    runs on this machine, so this machine's). Windows and retention are decided on it, so that
    a replica whose clock is off can neither decide a window early nor delete what the others
    accept."""
    if not is_postgres(engine):
        return datetime.now(UTC)
    from sqlalchemy import text

    with engine.connect() as conn:
        ts = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return as_utc(ts)
