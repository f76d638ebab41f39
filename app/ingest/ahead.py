"""Work that needs no database, begun on another thread while PostgreSQL works on a batch:
a prediction batch's summaries while its rows are copied in, a label chunk's pairs and
summaries while the next chunk's statement runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Ahead:
    """A computation that needs no database, begun on another thread by ``start`` (while
    PostgreSQL inserts a batch's rows) and taken by ``result``. If no thread of the pool
    has taken it up by then, it runs in the caller's thread: a busy pool delays nothing.
    ``result`` without ``start`` computes in the caller's thread."""

    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()
    THREADS = 4

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._future: Future[Any] | None = None

    @classmethod
    def _executor(cls) -> ThreadPoolExecutor:
        with cls._pool_lock:  # made at first use: never inherited across a fork
            if cls._pool is None:
                cls._pool = ThreadPoolExecutor(cls.THREADS, thread_name_prefix="modelmon-ahead")
            return cls._pool

    def start(self) -> None:
        self._future = self._executor().submit(self._fn)

    def result(self) -> Any:
        if self._future is None or self._future.cancel():  # cancelled: not begun yet
            return self._fn()
        return self._future.result()
