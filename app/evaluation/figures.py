"""The costly pure figures of a window (exact KS results, KS noise quantiles), shared between
the scheduler's process and the service's through the database: within ``shared`` the
monitoring memos read ``memo_results`` on the caller's connection and hold what they compute
for the caller to store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from app.monitoring._memo import sharing
from app.storage.memo import TableMemo


@contextmanager
def shared(conn: Connection) -> Iterator[TableMemo]:
    """Memos with a codec read the table within this block; the caller stores what was
    computed (``write`` in its own transaction, or ``flush`` after it)."""
    store = TableMemo(conn)
    with sharing(store):
        yield store
