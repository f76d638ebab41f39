"""A pooled connection is checked before it is handed out only after sitting idle: a busy
service spares the round trip, and a connection the database dropped is still replaced."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text

from app.storage.db import ping_after_idle

IDLE = 0.3


def _counted_engine(url: str):
    engine = create_engine(url)
    ping_after_idle(engine, IDLE)
    pings = []
    real = engine.dialect.do_ping
    engine.dialect.do_ping = lambda conn: (pings.append(1), real(conn))[1]
    return engine, pings


def test_only_an_idle_connection_is_pinged(db_url):
    engine, pings = _counted_engine(db_url)
    try:
        for _ in range(5):  # one connection, back to the pool between uses
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        assert len(pings) == 1  # the new connection's first checkout
        time.sleep(IDLE + 0.2)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert len(pings) == 2
    finally:
        engine.dispose()


def test_a_connection_dropped_while_idle_is_replaced_without_an_error(pg_url):
    engine, pings = _counted_engine(pg_url)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with create_engine(pg_url).connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        time.sleep(IDLE + 0.2)
        with engine.connect() as conn:  # the ping fails, the pool connects again
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
        assert len(pings) >= 2
    finally:
        engine.dispose()
