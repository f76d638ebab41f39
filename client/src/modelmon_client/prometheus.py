"""The monitors' counters as Prometheus metrics, read at scrape time (needs
prometheus_client). Monitors of the same model and version add up."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelmon_client.monitor import Monitor

# Stats field -> outcome label
OUTCOMES = {"queued": "queued", "sent": "sent", "duplicates": "duplicate",
            "dropped": "dropped", "refused": "refused"}


class _Collector:
    def __init__(self) -> None:
        self.monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        totals: dict[tuple[str, str], dict[str, int]] = {}
        for m in list(self.monitors):
            s = m.stats
            t = totals.setdefault((m.model, m.version), dict.fromkeys(
                (*OUTCOMES, "retried", "pending"), 0))
            for k in t:
                t[k] += getattr(s, k)
        records = CounterMetricFamily(
            "modelmon_client_records", "Records through the modelmon client by outcome "
            "(sent includes duplicates).", labels=["model", "version", "outcome"])
        retries = CounterMetricFamily(
            "modelmon_client_retries", "Requests sent again after a transient failure.",
            labels=["model", "version"])
        pending = GaugeMetricFamily(
            "modelmon_client_pending_records", "Records in the buffer or being sent.",
            labels=["model", "version"])
        for (model, version), t in sorted(totals.items()):
            for name, outcome in OUTCOMES.items():
                records.add_metric([model, version, outcome], t[name])
            retries.add_metric([model, version], t["retried"])
            pending.add_metric([model, version], t["pending"])
        yield from (records, retries, pending)


_collectors: dict[int, _Collector] = {}


def export(monitor: Monitor, registry: Any = None) -> None:
    from prometheus_client import REGISTRY

    registry = REGISTRY if registry is None else registry
    collector = _collectors.get(id(registry))
    if collector is None:
        collector = _collectors[id(registry)] = _Collector()
        registry.register(collector)
    collector.monitors.add(monitor)
