"""What a failed delivery attempt means for the message: try again later, or park it as a dead letter.

Exponential backoff with jitter: the n-th consecutive failure waits ``backoff_initial * 2**(n-1)`` seconds,
capped at ``backoff_max``, shortened by up to 20 % at random so that several nodes (or many destinations behind
one firewall) do not retry in lock-step.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

from radsync.adapters.outbox.store import ClaimedMessage, FailureMark, OutboxState
from radsync.adapters.outbox.transports import DeliveryError, DestinationUnavailable
from radsync.config import DicomDestinationSettings, HL7DestinationSettings

JITTER = 0.2


class RetryPolicy:
    def __init__(self, destination: HL7DestinationSettings | DicomDestinationSettings, rand: Callable[[], float] = random.random) -> None:
        self.max_attempts = destination.max_attempts
        self._initial = destination.backoff_initial
        self._max = destination.backoff_max
        self._rand = rand

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        base = min(self._max, self._initial * float(2 ** min(max(failures, 1) - 1, 62)))
        return base * (1.0 - JITTER * self._rand())

    def after_failure(
        self, message: ClaimedMessage, error: DeliveryError, now: dt.datetime, *, outage_failures: int = 0
    ) -> FailureMark:
        """The row's next state. ``outage_failures`` counts consecutive unavailable-destination failures."""
        if isinstance(error, DestinationUnavailable):
            # The message never left: keep its attempt count, back off on the destination's outage instead.
            wait = self.delay(outage_failures)
            return FailureMark(message.id, OutboxState.FAILED, message.attempts, _later(now, wait), error.message)
        attempts = message.attempts + 1
        if error.permanent or attempts >= self.max_attempts:
            return FailureMark(message.id, OutboxState.DEAD, attempts, now, error.message, error.ack_code)
        wait = self.delay(attempts)
        return FailureMark(
            message.id, OutboxState.FAILED, attempts, _later(now, wait), error.message, error.ack_code
        )


def _later(now: dt.datetime, seconds: float) -> dt.datetime:
    return now + dt.timedelta(seconds=seconds)
