"""Seeing and fixing the outbox: list by state with filters, inspect, resend, statistics."""

from __future__ import annotations

import datetime as dt

import pytest

from radsync.adapters.outbox.operations import NotResendable, OutboxOperations, UnknownEntry
from radsync.adapters.outbox.store import FailureMark, OutboxState, QueueStore, SentMark
from radsync.adapters.persistence.engine import Engines
from radsync.clock import utc_now
from radsync.config import HL7DestinationSettings, Settings
from tests.adapters.outbox.receiver import oru
from tests.adapters.outbox.support import enqueue

SETTINGS = Settings(
    hl7_destinations=(
        HL7DestinationSettings(name="ris", host="127.0.0.1", port=9),
        HL7DestinationSettings(name="billing", host="127.0.0.1", port=10),
    )
)


@pytest.fixture
def seeded(engines: Engines) -> list[int]:
    """ris: sent, dead, failed, pending; billing: pending."""
    ids = enqueue(engines, SETTINGS, ["V1", "V2", "V3", "V4"])
    ids += enqueue(engines, SETTINGS, ["W1"], destination="billing")
    queue = QueueStore(engines.write, utc_now, lease=dt.timedelta(seconds=60))
    now = utc_now()
    queue.claim("ris", "me", 1)
    queue.settle("me", sent=[SentMark(ids[0], now, 0.002, "AA")])
    queue.claim("ris", "me", 1)
    queue.settle("me", failure=FailureMark(ids[1], OutboxState.DEAD, 1, now, "AR: unsupported", "AR"))
    queue.claim("ris", "me", 1)
    queue.settle("me", failure=FailureMark(ids[2], OutboxState.FAILED, 1, now + dt.timedelta(hours=1), "timeout"))
    return ids


def ops(engines: Engines, woken: list[str] | None = None) -> OutboxOperations:
    return OutboxOperations(engines, utc_now, notify=woken.append if woken is not None else None)


def test_entries_are_listed_newest_first_and_filtered(engines: Engines, seeded: list[int]) -> None:
    listing = ops(engines)
    assert [e.control_id for e in listing.entries()] == ["W1", "V4", "V3", "V2", "V1"]
    assert [e.control_id for e in listing.entries("dead")] == ["V2"]
    assert [e.control_id for e in listing.entries(OutboxState.PENDING, destination="ris")] == ["V4"]
    assert [e.control_id for e in listing.entries(before_id=seeded[3], limit=2)] == ["V3", "V2"]
    assert [e.control_id for e in listing.entries(control_id="V1")] == ["V1"]
    dead = listing.entries("dead")[0]
    assert (dead.attempts, dead.ack_code, dead.last_error, dead.payload) == (1, "AR", "AR: unsupported", None)
    with pytest.raises(ValueError):
        listing.entries("lost")


def test_one_entry_comes_with_its_payload(engines: Engines, seeded: list[int]) -> None:
    assert ops(engines).get(seeded[0]).payload == oru("V1")
    with pytest.raises(UnknownEntry):
        ops(engines).get(999_999)


def test_resend_requeues_with_the_same_control_id_and_wakes_the_worker(engines: Engines, seeded: list[int]) -> None:
    woken: list[str] = []
    entry = ops(engines, woken).resend(seeded[1])
    assert (entry.state, entry.attempts, entry.control_id, entry.last_error, entry.ack_code) == (
        OutboxState.PENDING, 0, "V2", "", "")
    assert woken == ["ris"]
    with pytest.raises(NotResendable):
        ops(engines).resend(seeded[3])  # already pending
    with pytest.raises(UnknownEntry):
        ops(engines).resend(999_999)


def test_stats_count_the_queue_per_destination(engines: Engines, seeded: list[int]) -> None:
    stats = {s.destination: s for s in ops(engines).stats(["ris", "billing", "idle"])}
    ris = stats["ris"]
    assert (ris.pending, ris.failed, ris.sending, ris.dead, ris.depth) == (1, 1, 0, 1, 2)
    assert ris.oldest_pending_at is not None and ris.oldest_pending_seconds >= 0
    assert stats["billing"].depth == 1
    assert (stats["idle"].depth, stats["idle"].oldest_pending_at) == (0, None)
