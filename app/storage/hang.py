"""A frozen database is a 503 within ``hang_seconds``, not a hung request.

A database that is down refuses or drops connections, and the connect timeout turns that into
a 503 at once. A database that is *frozen* (the process stopped, a proxy or load balancer that
stops forwarding, a host that hangs while its kernel still acknowledges packets) does neither:
a statement already sent just waits for an answer, and neither TCP keepalive nor
``tcp_user_timeout`` ends the wait, because the far side's kernel acknowledges everything.

So every wait of a guarded connection for the database is watched: the pooled connection's
check (pre-ping), every statement and COPY, the commit and the rollback. The bound
``hang_seconds`` is split in thirds, so that a request meets it whichever of them it waits in:

- when a wait has lasted a third, the watcher opens a new connection to the same database and
  asks it ``SELECT 1``, giving it another third to answer (one probe per database at a time,
  a new one at most every third while waits last). If it answers, the database is alive and
  the long wait is a slow statement, bounded by the server's ``statement_timeout``: nothing is
  done.
- If it does not, the database is marked frozen, and the socket of every wait that has lasted
  two thirds is shut down (now, and as each further wait reaches it while the mark stands):
  the waiting thread gets a connection error at once (a 503 with Retry-After, and the pooled
  connection is discarded), and the transaction it was in is rolled back by the server
  whenever it resumes.
- While the mark stands, a new connection (the pool's replacement for a discarded one) has the
  last third to be made, not the whole connect timeout; one that is made clears the mark, as
  does a probe that answers.

So a request waits at most two thirds in a statement, plus a third for the new connection its
retry would need: ``hang_seconds`` in all. A new connection to a database not yet seen frozen
is bounded by the connect timeout.
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

POLL_SECONDS = 0.1


@dataclass(eq=False)
class _Database:
    """One database as the watcher sees it: how to reach it, when it was last probed, and
    whether the latest probe found it frozen."""

    args: tuple[Any, ...]
    params: dict[str, Any]
    hang_seconds: float
    last_probe: float = float("-inf")  # when the latest probe started
    probing: bool = False
    frozen: bool = False
    frozen_seen: int = 0  # probes that found it frozen (for tests and logs)

    @property
    def third(self) -> float:
        return self.hang_seconds / 3


@dataclass(eq=False)
class _Wait:
    conn: GuardedConnection
    database: _Database
    started: float = field(default_factory=time.monotonic)
    cut: bool = False


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

    def _cut_locked(self, now: float) -> int:
        """Shut down every wait on a frozen database that has lasted two thirds. Under the
        lock: a wait still registered is still inside psycopg's wait, so its connection (and
        socket) is open and is the one we mean."""
        cut = [w for w in self._waits.values() if w.database.frozen and not w.cut
               and now - w.started >= 2 * w.database.third]
        for w in cut:
            w.cut = True
            _shut_down(w.conn)
        return len(cut)

    def _check(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._cut_locked(now)
            due = {w.database for w in self._waits.values()
                   if now - w.started >= w.database.third and not w.database.probing
                   and now - w.database.last_probe >= w.database.third}
            for db in due:
                db.probing = True
                db.last_probe = now
        for db in due:
            threading.Thread(target=self._probe, args=(db,), name="modelmon-db-probe",
                             daemon=True).start()

    def _probe(self, db: _Database) -> None:
        try:
            alive = _answers(db.args, db.params, db.third)
            with self._lock:
                db.frozen = not alive
                if alive:
                    return
                db.frozen_seen += 1
                cut = self._cut_locked(time.monotonic())
            log.warning("database did not answer a new connection within %.1f s: it is "
                        "frozen, %d waiting statement(s) were cut (503 to their requests)",
                        db.third, cut)
        finally:
            db.probing = False


_WATCHER = _Watcher()


def _connect(db: _Database, cargs: Any, cparams: dict[str, Any]) -> GuardedConnection:
    """A new connection: bounded by the connect timeout, or by a third of the bound while
    the database is marked frozen (made, it clears the mark)."""
    if not db.frozen:
        return GuardedConnection.connect(*cargs, **cparams)
    conn = _connect_within(cargs, cparams, db.third)
    db.frozen = False
    return conn


def _answers(args: tuple[Any, ...], params: dict[str, Any], timeout: float) -> bool:
    """Whether a new connection to the database answers SELECT 1 within ``timeout``."""
    def attempt() -> bool:
        with psycopg.connect(*args, **{**params, "application_name": "modelmon-probe"}) as c:
            c.execute("SELECT 1")
        return True

    try:
        return _within(attempt, timeout, lambda ok: None)
    except Exception:  # noqa: BLE001 - any failure means it did not answer
        return False


def _connect_within(cargs: Any, cparams: dict[str, Any], timeout: float
                    ) -> GuardedConnection:
    try:
        return _within(lambda: GuardedConnection.connect(*cargs, **cparams), timeout,
                       lambda conn: conn.close())
    except TimeoutError:
        raise psycopg.OperationalError(
            f"the database, found frozen, did not answer a new connection within "
            f"{timeout:.1f} s") from None


def _within(call: Any, timeout: float, discard: Any) -> Any:
    """``call()`` in a thread of its own, since a database that accepts a connection and then
    freezes would hold the caller: its result, its exception, or TimeoutError after
    ``timeout`` (a result that comes later is given to ``discard``)."""
    lock = threading.Lock()
    box: dict[str, Any] = {}

    def attempt() -> None:
        try:
            out = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out, box["error"] = None, exc
        with lock:
            late = box.setdefault("state", "done") == "abandoned"
            box["out"] = out
        if late and out is not None:
            discard(out)

    t = threading.Thread(target=attempt, name="modelmon-db-connect", daemon=True)
    t.start()
    t.join(timeout)
    with lock:
        if box.setdefault("state", "abandoned") == "abandoned":
            raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["out"]


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


def guard(engine: Engine, *, hang_seconds: float) -> None:
    """Make every connection ``engine`` opens a GuardedConnection."""
    databases: dict[tuple, _Database] = {}

    @event.listens_for(engine, "do_connect")
    def _on_connect(_dialect: Any, _rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        key = (tuple(map(str, cargs)), tuple(sorted((k, str(v)) for k, v in cparams.items())))
        db = databases.get(key)
        if db is None:
            db = databases[key] = _Database(tuple(cargs), dict(cparams), hang_seconds)
        conn = _connect(db, cargs, cparams)
        conn._mm_database = db
        return conn

