"""Prometheus metrics of the outbox, per destination.

Counters and the ACK latency histogram are updated by the workers. Queue depth and oldest-pending age are read
from the database at scrape time (a custom collector): the database is the truth, it includes rows other nodes
enqueued, and a worker blocked on a slow ACK cannot leave the gauges stale.

prometheus_client refuses to register a metric name twice in one registry, so the process-wide instance is made
once (``OutboxMetrics.default()``, on the default registry that ``/metrics`` serves); tests build their own with a
fresh ``CollectorRegistry``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from radsync.adapters.outbox.operations import QueueStats

log = logging.getLogger("radsync.outbox")

ACK_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

StatsSource = Callable[[], Iterable["QueueStats"]]


class _QueueCollector(Collector):
    """Depth and oldest-pending age, queried when Prometheus scrapes."""

    def __init__(self) -> None:
        self.source: StatsSource | None = None

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "radsync_outbox_depth", "Messages waiting for delivery (pending, failed, sending)", labels=["destination"]
        )
        oldest = GaugeMetricFamily(
            "radsync_outbox_oldest_pending_seconds",
            "Age of the oldest message waiting for delivery (0 when none)",
            labels=["destination"],
        )
        source = self.source
        if source is not None:
            try:
                for stats in source():
                    depth.add_metric([stats.destination], stats.depth)
                    oldest.add_metric([stats.destination], stats.oldest_pending_seconds)
            except Exception as exc:  # a scrape must never take /metrics down with it
                log.warning("outbox queue metrics unavailable: %s", type(exc).__name__)
        yield depth
        yield oldest

    def describe(self) -> Iterator[Metric]:
        return iter(())


class OutboxMetrics:
    _default: ClassVar[OutboxMetrics | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else REGISTRY
        self.registry = registry
        self.sent = Counter(
            "radsync_outbox_sent", "Messages delivered and acknowledged (AA/CA)", ["destination"], registry=registry
        )
        self.failed = Counter(
            "radsync_outbox_failed", "Failed delivery attempts (each retry counts)", ["destination"], registry=registry
        )
        self.dead = Counter(
            "radsync_outbox_dead", "Messages parked as dead letters", ["destination"], registry=registry
        )
        self.ack_latency = Histogram(
            "radsync_outbox_ack_latency_seconds",
            "Time from handing a message to the receiver to its positive ACK",
            ["destination"],
            buckets=ACK_LATENCY_BUCKETS,
            registry=registry,
        )
        self._queue = _QueueCollector()
        registry.register(self._queue)

    @classmethod
    def default(cls) -> OutboxMetrics:
        """The process-wide instance on the default registry (created on first use, then shared)."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def watch(self, source: StatsSource | None) -> None:
        """Read depth and oldest-pending age from ``source`` at scrape time (None: report nothing)."""
        self._queue.source = source
