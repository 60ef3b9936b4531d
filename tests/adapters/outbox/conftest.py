"""Fixtures for the outbox tests: a scriptable RIS receiver, and dispatchers with small timeouts and backoffs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from radsync.adapters.outbox.dispatcher import OutboxDispatcher
from radsync.adapters.outbox.metrics import OutboxMetrics
from radsync.adapters.persistence.engine import Engines
from radsync.clock import utc_now
from radsync.config import Settings
from tests.adapters.outbox.receiver import Receiver
from tests.adapters.outbox.support import MakeDispatcher


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    ris = Receiver().start()
    try:
        yield ris
    finally:
        ris.close()


@pytest.fixture
def metrics() -> OutboxMetrics:
    return OutboxMetrics(CollectorRegistry())


@pytest.fixture
def make_dispatcher(engines: Engines, metrics: OutboxMetrics) -> Iterator[MakeDispatcher]:
    """Build (and at the end stop) dispatchers on the test database; ``start=False`` leaves one unstarted."""
    made: list[OutboxDispatcher] = []

    def make(settings: Settings, *, start: bool = True, **kwargs: Any) -> OutboxDispatcher:
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("stop_grace", 1.0)
        kwargs.setdefault("node", "test-node")
        dispatcher = OutboxDispatcher(settings, engines, utc_now, metrics=metrics, **kwargs)
        made.append(dispatcher)
        if start:
            dispatcher.start()
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.stop()
