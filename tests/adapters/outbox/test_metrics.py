"""Metrics are registered once per registry and a failing queue query never breaks a scrape."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from radsync.adapters.outbox.metrics import OutboxMetrics
from radsync.adapters.outbox.operations import QueueStats


def test_the_process_wide_metrics_are_created_once() -> None:
    assert OutboxMetrics.default() is OutboxMetrics.default()
    assert OutboxMetrics.default().registry is REGISTRY


def test_queue_gauges_come_from_the_source_at_scrape_time() -> None:
    metrics = OutboxMetrics(CollectorRegistry())
    metrics.watch(lambda: [QueueStats("ris", pending=2, failed=1, oldest_pending_seconds=12.5)])
    assert metrics.registry.get_sample_value("radsync_outbox_depth", {"destination": "ris"}) == 3
    assert metrics.registry.get_sample_value("radsync_outbox_oldest_pending_seconds", {"destination": "ris"}) == 12.5


def test_a_failing_source_leaves_the_other_metrics_alone() -> None:
    metrics = OutboxMetrics(CollectorRegistry())

    def broken() -> list[QueueStats]:
        raise ConnectionError("database down")

    metrics.watch(broken)
    metrics.sent.labels("ris").inc()
    assert metrics.registry.get_sample_value("radsync_outbox_sent_total", {"destination": "ris"}) == 1
    assert metrics.registry.get_sample_value("radsync_outbox_depth", {"destination": "ris"}) is None
