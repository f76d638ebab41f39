"""Fixtures for the client tests: a real `modelmon serve` process (which can be killed and
started again on the same port), on a throwaway Postgres database or a SQLite file, and the
rows it stored, counted in the database itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import func, select

from app.settings import Settings
from app.storage.db import make_engine
from app.storage.tables import labels, predictions
from tests.conftest import ROOT, create_pg_database, drop_pg_database, free_port
from tests.helpers import wait_ready


class Served:
    """`modelmon serve` in a child process; ``stop``/``start`` keep the port."""

    def __init__(self, database_url: str, log_path: Path, **env: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MODELMON_DATABASE_URL": database_url,
                    "MODELMON_LOG_LEVEL": "warning", "MODELMON_SCHEDULER_ENABLED": "false",
                    **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Served:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.url, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cli(self, *args: str) -> str:
        """A `modelmon` command against this server's database; its standard output."""
        return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=self.env,
                              check=True, capture_output=True, text=True).stdout

    def register(self, name: str, *, token: str | None = None, versions: tuple[str, ...] = ("v1",),
                 **model: object) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"name": name, "task": "binary_classification",
                "features": [{"name": "amount", "type": "numeric"},
                             {"name": "country", "type": "categorical"}],
                "cohort_keys": ["region"], "classes": ["legit", "fraud"], **model}
        r = httpx2.post(f"{self.url}/v1/models", json=body, headers=headers, timeout=30)
        assert r.status_code in (200, 201), r.text
        for v in versions:
            r = httpx2.post(f"{self.url}/v1/models/{name}/versions", json={"version": v},
                            headers=headers, timeout=30)
            assert r.status_code in (200, 201), r.text

    def _count(self, table, model: str) -> int:
        from app.storage.tables import models

        engine = make_engine(Settings(database_url=self.database_url))
        try:
            with engine.connect() as conn:
                model_id = conn.execute(select(models.c.id).where(
                    models.c.name == model)).scalar_one()
                return int(conn.execute(select(func.count()).select_from(table).where(
                    table.c.model_id == model_id)).scalar_one())
        finally:
            engine.dispose()

    def predictions(self, model: str) -> int:
        return self._count(predictions, model)

    def labels(self, model: str) -> int:
        return self._count(labels, model)

    def prediction_ids(self, model: str) -> list[str]:
        from app.storage.tables import models

        engine = make_engine(Settings(database_url=self.database_url))
        try:
            with engine.connect() as conn:
                return [r[0] for r in conn.execute(
                    select(predictions.c.prediction_id).join(
                        models, models.c.id == predictions.c.model_id).where(
                        models.c.name == model))]
        finally:
            engine.dispose()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Until ``condition()`` holds; a failure (never a timed assertion) when it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


@pytest.fixture
def pg_database() -> Iterator[str]:
    url = create_pg_database("modelmon_client")
    yield url
    drop_pg_database(url)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(database_url, **env)`` starts a server; every one is stopped at the end."""
    started: list[Served] = []

    def make(database_url: str, **env: str) -> Served:
        s = Served(database_url, tmp_path / f"serve-{len(started)}.log", **env)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server on a SQLite file for the tests that need no outage; each test uses its own
    model name."""
    tmp = tmp_path_factory.mktemp("client-sqlite")
    s = Served(f"sqlite:///{tmp / 'modelmon.db'}", tmp / "serve.log").start()
    yield s
    s.stop()
