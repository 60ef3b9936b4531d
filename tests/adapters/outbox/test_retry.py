"""Backoff and the dead-letter decision."""

from __future__ import annotations

import datetime as dt

from radsync.adapters.outbox.retry import RetryPolicy
from radsync.adapters.outbox.store import ClaimedMessage, OutboxState
from radsync.adapters.outbox.transports import DeliveryError, DestinationUnavailable
from radsync.config import HL7DestinationSettings

NOW = dt.datetime(2024, 6, 12, 8, 0, 0)


def policy(rand: float = 0.0, **kwargs: object) -> RetryPolicy:
    settings = {"name": "ris", "host": "h", "port": 1, "backoff_initial": 1.0, "backoff_max": 60.0, "max_attempts": 4}
    return RetryPolicy(HL7DestinationSettings(**{**settings, **kwargs}), rand=lambda: rand)


def message(attempts: int) -> ClaimedMessage:
    return ClaimedMessage(7, "C7", "ORU^R01", b"MSH|", attempts)


def test_the_delay_doubles_up_to_the_cap() -> None:
    assert [policy().delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy().delay(10_000) == 60


def test_jitter_only_shortens_the_delay_by_up_to_a_fifth() -> None:
    assert policy(rand=0.999999).delay(3) > 3.2
    assert policy(rand=0.999999).delay(3) < 4


def test_a_failure_is_retried_later_until_the_last_attempt() -> None:
    mark = policy().after_failure(message(0), DeliveryError("AE: no", reason="AE", ack_code="AE"), NOW)
    assert (mark.state, mark.attempts, mark.next_attempt_at, mark.ack_code) == (
        OutboxState.FAILED, 1, NOW + dt.timedelta(seconds=1), "AE")
    last = policy().after_failure(message(3), DeliveryError("timeout"), NOW)
    assert (last.state, last.attempts) == (OutboxState.DEAD, 4)


def test_a_permanent_failure_is_dead_at_once() -> None:
    mark = policy().after_failure(message(0), DeliveryError("AR", permanent=True), NOW)
    assert (mark.state, mark.attempts) == (OutboxState.DEAD, 1)


def test_an_unreachable_destination_does_not_use_up_attempts() -> None:
    mark = policy().after_failure(message(3), DestinationUnavailable("refused"), NOW, outage_failures=5)
    assert (mark.state, mark.attempts) == (OutboxState.FAILED, 3)
    assert mark.next_attempt_at == NOW + dt.timedelta(seconds=16)
