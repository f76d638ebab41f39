"""The memo of costly pure figures shared by every process on one database (app/monitoring/
_memo.py; opened by app/evaluation/figures.py): read on the caller's connection, the figures
computed in the meantime written together afterwards, by whoever computed them first. Keys
are digests of the inputs, so a stored figure is never stale; a lost write only costs
computing it again."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from app.storage.tables import memo_results

log = logging.getLogger("modelmon.memo")


class TableMemo:
    """A shared store over ``memo_results``: lookups on ``conn``, new values held until
    ``flush``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pending: dict[bytes, str] = {}

    def get(self, key: bytes) -> str | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, str]:
        """The values of those of ``keys`` pending or stored, in one statement per 500 keys
        (a window's columns: one round trip, not one each)."""
        out = {k: self.pending[k] for k in keys if k in self.pending}
        rest = sorted({k for k in keys if k not in out})
        for lo in range(0, len(rest), 500):
            rows = self.conn.execute(select(memo_results.c.key, memo_results.c.value)
                                     .where(memo_results.c.key.in_(rest[lo:lo + 500])))
            out.update({bytes(k): v for k, v in rows})
        return out

    def put(self, key: bytes, value: str) -> None:
        self.pending[key] = value

    def write(self, conn: Connection) -> int:
        """Insert the pending values on ``conn``, keeping any another process stored first
        (the same figure, as the key says)."""
        if not self.pending:
            return 0
        now = datetime.now(UTC)
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        rows = [{"key": k, "value": v, "created_at": now}
                for k, v in sorted(self.pending.items())]  # one lock order for every writer
        conn.execute(insert(memo_results).on_conflict_do_nothing(), rows)
        written = len(rows)
        self.pending.clear()
        return written

    def write_within(self, conn: Connection) -> int:
        """``write`` inside the caller's transaction, under a savepoint: a figure another
        transaction stored meanwhile (under REPEATABLE READ, PostgreSQL refuses the insert as
        a serialization failure) or any other failure is logged and undone alone, never
        failing the caller's work."""
        def store() -> int:
            with conn.begin_nested():
                return self.write(conn)
        return self._or_logged(store)

    def flush(self, engine: Engine) -> int:
        """``write`` in a transaction of its own; a failure is logged and costs only a later
        computation (the figures are not a result anyone waits for)."""
        def store() -> int:
            with engine.begin() as conn:
                return self.write(conn)
        return self._or_logged(store)

    def _or_logged(self, store: Callable[[], int]) -> int:
        """``store()``'s count of figures written; on a database error, the pending figures
        are logged and dropped (0)."""
        if not self.pending:
            return 0
        try:
            return store()
        except SQLAlchemyError as exc:
            log.warning("memo: %d figures not stored (%s)", len(self.pending),
                        type(exc).__name__)
            self.pending.clear()
            return 0


def prune(conn: Connection, max_rows: int) -> int:
    """Keep the newest ``max_rows`` figures; the number deleted."""
    cut = conn.execute(select(memo_results.c.created_at)
                       .order_by(memo_results.c.created_at.desc())
                       .offset(max_rows).limit(1)).scalar()
    if cut is None:
        return 0
    return conn.execute(delete(memo_results).where(memo_results.c.created_at <= cut)).rowcount


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(memo_results)).scalar() or 0)
