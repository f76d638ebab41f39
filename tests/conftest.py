"""Fixtures: a throwaway Postgres database per run (real server), a SQLite file, and a client
for each store. Tests that take ``client`` run once on each store.

Postgres: MODELMON_TEST_DATABASE_URL when set, otherwise postgres@127.0.0.1:5432. With
CI=true an unreachable server fails the run; elsewhere those tests are skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings
from app.storage import migrate
from app.storage.db import make_engine
from app.storage.tables import metadata

# Tests drive job ticks themselves; a test that wants the scheduler enables it explicitly.
os.environ["MODELMON_SCHEDULER_ENABLED"] = "false"
# Starlette's TestClient sends `Host: testserver`; on the loopback default the service answers
# only loopback names and these (tests/api/test_api_guards.py checks the refusal).
os.environ["MODELMON_ALLOWED_HOSTS"] = "testserver"

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Every table of the schema, dependents first, so that no test sees another's rows.
TABLES = tuple(t.name for t in reversed(metadata.sorted_tables))


def _admin_url() -> str:
    return os.environ.get("MODELMON_TEST_DATABASE_URL", DEFAULT_PG)


def _psycopg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_pg_database(prefix: str = "modelmon_test") -> str:
    """Create a throwaway database on the test server and return its SQLAlchemy URL."""
    admin = _admin_url()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(_psycopg_dsn(admin), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        msg = f"PostgreSQL at {make_url(admin).render_as_string()} is unreachable: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + " (CI=true: a missing Postgres is a failure)", pytrace=False)
        pytest.skip(msg)
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_psycopg_dsn(_admin_url()), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def own_pg_database(prefix: str) -> Iterator[str]:
    """A database of its own for a served process, dropped afterwards."""
    url = create_pg_database(prefix)
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    engine = make_engine(Settings(database_url=url))
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "modelmon.db"
    url = f"sqlite:///{path}"
    engine = make_engine(Settings(database_url=url))
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{'pg' if request.param == 'postgres' else 'sqlite'}_url")


def clean(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for t in TABLES:
                conn.execute(text(f"DELETE FROM {t}"))


@pytest.fixture
def settings(db_url: str, request: pytest.FixtureRequest) -> Settings:
    """The service's settings on the test database; a test may override some with
    ``@pytest.mark.parametrize("settings", [{...}], indirect=True)``."""
    return Settings(database_url=db_url, **getattr(request, "param", {}))


@pytest.fixture
def app(settings: Settings):
    application = create_app(settings)
    yield application
    clean(application.state.engine)
    application.state.engine.dispose()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def engine(app) -> Engine:
    return app.state.engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app served by uvicorn on a real socket, in a thread of this process."""

    def __init__(self, app, **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", **options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


ROOT = Path(__file__).resolve().parents[1]
