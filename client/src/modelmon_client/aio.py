"""``AsyncMonitor``: the same monitor for asyncio servers (FastAPI, BentoML).

``log`` and ``label`` never wait, so they are called directly from coroutines; what can
wait (flushing, closing, registration) runs in a worker thread and is awaited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from modelmon_client._sender import Stats
from modelmon_client.monitor import Monitor


class AsyncMonitor:
    """Takes ``Monitor``'s arguments. ``log``, ``label``, ``log_batch`` and ``label_batch``
    are plain calls; ``flush``, ``aclose`` and the ``register_*``/``upload_*`` methods are
    awaited; ``async with AsyncMonitor(...) as monitor:`` closes it."""

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self.monitor = Monitor(url, **kwargs)
        self.log = self.monitor.log
        self.label = self.monitor.label
        self.log_batch = self.monitor.log_batch
        self.label_batch = self.monitor.label_batch

    @property
    def stats(self) -> Stats:
        return self.monitor.stats

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.monitor.flush, timeout)

    async def aclose(self, timeout: float | None = 30.0) -> bool:
        return await asyncio.to_thread(self.monitor.close, timeout)

    async def register_model(self, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.monitor.register_model(**kwargs))

    async def register_version(self, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.monitor.register_version(**kwargs))

    async def register_sklearn(self, estimator: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.monitor.register_sklearn(estimator,
                                                                             **kwargs))

    async def upload_weights(self, weights: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.monitor.upload_weights(weights, **kwargs))

    async def upload_reference(self, data: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.monitor.upload_reference(data, **kwargs))

    def export_metrics(self, registry: Any = None) -> None:
        self.monitor.export_metrics(registry)

    async def __aenter__(self) -> AsyncMonitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
