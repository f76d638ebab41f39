"""A frozen database is a fast 503, not a hung request.

A database that is down refuses or drops connections, and the connect timeout turns that into
a 503 at once. A database that is *frozen* (the process stopped, a proxy or load balancer that
stops forwarding, a host that hangs while its kernel still acknowledges packets) does neither:
a statement already sent just waits for an answer, and neither TCP keepalive nor
``tcp_user_timeout`` ends the wait, because the far side's kernel acknowledges everything.

So every wait of a guarded connection for the database is watched. When one has lasted
``hang_seconds``, the watcher opens a new connection to the same database (bounded by the
connect timeout) and asks it ``SELECT 1``. If that answers, the database is alive and the
long wait is a slow statement, bounded by the server's ``statement_timeout``; nothing is done.
If it does not, the socket of every wait older than ``hang_seconds`` on that database is shut
down: the waiting thread gets a connection error at once (a 503 with Retry-After, and the
pooled connection is discarded), and the transaction it was in is rolled back by the server
whenever it resumes. One probe per database runs at a time, at most once per
``hang_seconds``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, event

log = logging.getLogger("modelmon")

POLL_SECONDS = 0.25


@dataclass(eq=False)
class _Database:
    """One database as the watcher sees it: how to reach it, and when it was last probed."""

    args: tuple[Any, ...]
    params: dict[str, Any]
    hang_seconds: float
    probe_timeout: float
    last_probe: float = float("-inf")
    probing: bool = False
    frozen_seen: int = 0  # probes that found it frozen (for tests and logs)


@dataclass(eq=False)
class _Wait:
    conn: GuardedConnection
    database: _Database
    started: float = field(default_factory=time.monotonic)


class _Watcher:
    """Every guarded wait in the process, and the one thread that watches them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: dict[int, _Wait] = {}
        self._thread: threading.Thread | None = None

    def enter(self, conn: GuardedConnection, database: _Database) -> int:
        w = _Wait(conn, database)
        with self._lock:
            self._waits[id(w)] = w
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="modelmon-db-hang",
                                                daemon=True)
                self._thread.start()
        return id(w)

    def leave(self, token: int) -> None:
        with self._lock:
            self._waits.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            try:
                self._check()
            except Exception:
                log.exception("database hang watcher failed; it goes on")

    def _check(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = {w.database for w in self._waits.values()
                   if now - w.started >= w.database.hang_seconds
                   and not w.database.probing
                   and now - w.database.last_probe >= w.database.hang_seconds}
            for db in due:
                db.probing = True
        for db in due:
            threading.Thread(target=self._probe, args=(db,), name="modelmon-db-probe",
                             daemon=True).start()

    def _probe(self, db: _Database) -> None:
        started = time.monotonic()
        try:
            alive = _answers(db.args, db.params, db.probe_timeout)
            with self._lock:
                db.last_probe = time.monotonic()
                if alive:
                    return
                db.frozen_seen += 1
                cut = [w for w in self._waits.values()
                       if w.database is db and started - w.started >= db.hang_seconds]
                # Under the lock: a wait still registered is still inside psycopg's wait, so
                # its connection (and socket) is open and is the one we mean.
                for w in cut:
                    _shut_down(w.conn)
            log.warning("database did not answer a new connection within %.1f s while %d "
                        "statement(s) waited %.1f s or more: their connections were cut "
                        "(503 to their requests)", db.probe_timeout, len(cut), db.hang_seconds)
        finally:
            db.probing = False


_WATCHER = _Watcher()


def _answers(args: tuple[Any, ...], params: dict[str, Any], timeout: float) -> bool:
    """Whether a new connection to the database answers SELECT 1 within ``timeout``; run
    in a thread of its own, since a database that accepts the connection and then freezes
    would hold the caller."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with psycopg.connect(*args, **{**params, "application_name": "modelmon-probe"}) as c:
                c.execute("SELECT 1")
            result.append(True)
        except Exception:  # noqa: BLE001 - any failure means it did not answer
            result.append(False)

    t = threading.Thread(target=attempt, name="modelmon-db-probe-connect", daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _shut_down(conn: psycopg.Connection) -> None:
    try:
        fd = conn.pgconn.socket
        s = socket.socket(fileno=os.dup(fd))
    except (OSError, psycopg.Error):
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


class GuardedConnection(psycopg.Connection):
    """A psycopg connection whose waits for the database are watched (module docstring)."""

    _mm_database: _Database | None = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        db = self._mm_database
        if db is None:
            return super().wait(gen, *args, **kwargs)
        token = _WATCHER.enter(self, db)
        try:
            return super().wait(gen, *args, **kwargs)
        finally:
            _WATCHER.leave(token)


def guard(engine: Engine, *, hang_seconds: float, connect_timeout: float) -> None:
    """Make every connection ``engine`` opens a GuardedConnection."""
    databases: dict[tuple, _Database] = {}

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        conn = GuardedConnection.connect(*cargs, **cparams)
        key = (tuple(map(str, cargs)), tuple(sorted((k, str(v)) for k, v in cparams.items())))
        db = databases.get(key)
        if db is None:
            db = databases[key] = _Database(tuple(cargs), dict(cparams), hang_seconds,
                                            probe_timeout=connect_timeout + 1.0)
        conn._mm_database = db
        return conn

