"""Seeing and fixing the outbox: list entries by state, look at one, resend it, and queue statistics.

Used by the operator API (``GET /api/outbox``, ``POST /api/outbox/{id}/resend``), the CLI (``radsync outbox``),
the order timeline and the metrics. Reads go to the read engine; a resend is a compare-and-set on the write
engine, so it cannot clash with a worker that is delivering the same row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update

from radsync.adapters.outbox.store import QUEUE_STATES, UNSENT, Clock, OutboxState
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import outbox, outbox_payloads

RESENDABLE = (OutboxState.DEAD, OutboxState.FAILED, OutboxState.SENT)
MAX_LIST = 1000


class UnknownEntry(LookupError):
    """No outbox entry has this id (HTTP 404)."""


class NotResendable(ValueError):
    """The entry is pending or being sent right now (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbound message and its delivery record. ``payload`` is only filled by ``get``."""

    id: int
    destination: str
    message_type: str
    control_id: str
    state: OutboxState
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str
    ack_code: str
    accession: str
    order_pk: int | None
    created_at: dt.datetime
    updated_at: dt.datetime
    sent_at: dt.datetime | None
    ack_latency: float | None
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One destination's queue: what waits (pending + failed + sending), what is dead, and the oldest waiting."""

    destination: str
    pending: int = 0
    failed: int = 0
    sending: int = 0
    dead: int = 0
    oldest_pending_at: dt.datetime | None = None
    oldest_pending_seconds: float = 0.0

    @property
    def depth(self) -> int:
        return self.pending + self.failed + self.sending


_SUMMARY = (
    outbox.c.pk,
    outbox.c.destination,
    outbox.c.message_type,
    outbox.c.control_id,
    outbox.c.state,
    outbox.c.attempts,
    outbox.c.next_attempt_at,
    outbox.c.last_error,
    outbox.c.ack_code,
    outbox.c.accession,
    outbox.c.order_pk,
    outbox.c.created_at,
    outbox.c.updated_at,
    outbox.c.sent_at,
    outbox.c.ack_latency,
)


class OutboxOperations:
    """The operator's view of the outbox. ``notify`` wakes the local dispatcher after a resend (optional)."""

    def __init__(self, engines: Engines, clock: Clock, notify: Callable[[str], None] | None = None) -> None:
        self._engines = engines
        self._clock = clock
        self._notify = notify

    def entries(
        self,
        state: OutboxState | str | None = None,
        *,
        destination: str | None = None,
        accession: str | None = None,
        order_pk: int | None = None,
        control_id: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        """Entries newest first, filtered; page with ``before_id`` = the last id of the previous page."""
        query = select(*_SUMMARY).order_by(outbox.c.pk.desc()).limit(max(1, min(limit, MAX_LIST)))
        if state is not None:
            query = query.where(outbox.c.state == OutboxState(state))
            if state != OutboxState.SENT:
                query = query.where(UNSENT)  # the partial index holds every other state
        if destination is not None:
            query = query.where(outbox.c.destination == destination)
        if accession is not None:
            query = query.where(outbox.c.accession == accession)
        if order_pk is not None:
            query = query.where(outbox.c.order_pk == order_pk)
        if control_id is not None:
            query = query.where(outbox.c.control_id == control_id)
        if before_id is not None:
            query = query.where(outbox.c.pk < before_id)
        with self._engines.read.connect() as conn:
            return [_entry(row) for row in conn.execute(query)]

    def get(self, entry_id: int) -> OutboxEntry:
        """One entry with its payload; raises ``UnknownEntry``."""
        with self._engines.read.connect() as conn:
            row = conn.execute(
                select(*_SUMMARY, outbox_payloads.c.payload)
                .join_from(outbox, outbox_payloads, outbox_payloads.c.outbox_pk == outbox.c.pk)
                .where(outbox.c.pk == entry_id)
            ).first()
        if row is None:
            raise UnknownEntry(f"no outbox entry {entry_id}")
        return _entry(row, bytes(row.payload))

    def resend(self, entry_id: int) -> OutboxEntry:
        """Queue a dead, failed or sent entry again: same payload and control ID, attempts reset.

        It rejoins its destination's queue at its original place (queue order is by id), so it goes next.
        """
        now = self._clock()
        with self._engines.write.begin() as conn:
            changed = conn.execute(
                update(outbox)
                .where(outbox.c.pk == entry_id, outbox.c.state.in_(RESENDABLE))
                .values(
                    state=OutboxState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    last_error="",
                    ack_code="",
                    sent_at=None,
                    ack_latency=None,
                    updated_at=now,
                )
            ).rowcount
            if changed != 1:
                state = conn.execute(select(outbox.c.state).where(outbox.c.pk == entry_id)).scalar()
                if state is None:
                    raise UnknownEntry(f"no outbox entry {entry_id}")
                raise NotResendable(f"outbox entry {entry_id} is {state}; only dead, failed or sent entries can be resent")
        entry = self.get(entry_id)
        if self._notify is not None:
            self._notify(entry.destination)
        return entry

    def stats(self, destinations: Sequence[str] = ()) -> list[QueueStats]:
        """Per destination: counts by state (not sent) and the oldest waiting message; ``destinations`` always
        appear, with zeros when they have nothing queued."""
        now = self._clock()
        waiting = outbox.c.state.in_(QUEUE_STATES)
        query = (
            select(
                outbox.c.destination,
                outbox.c.state,
                func.count().label("n"),
                func.min(case((waiting, outbox.c.created_at))).label("oldest"),
            )
            .where(UNSENT)  # queue states and dead: what the partial index holds
            .group_by(outbox.c.destination, outbox.c.state)
        )
        counts: dict[str, dict[str, int]] = {name: {} for name in destinations}
        oldest: dict[str, dt.datetime] = {}
        with self._engines.read.connect() as conn:
            for row in conn.execute(query):
                counts.setdefault(row.destination, {})[row.state] = int(row.n)
                if row.oldest is not None and (row.destination not in oldest or row.oldest < oldest[row.destination]):
                    oldest[row.destination] = row.oldest
        result = []
        for name in sorted(counts):
            by_state = counts[name]
            first = oldest.get(name)
            result.append(
                QueueStats(
                    destination=name,
                    pending=by_state.get(OutboxState.PENDING, 0),
                    failed=by_state.get(OutboxState.FAILED, 0),
                    sending=by_state.get(OutboxState.SENDING, 0),
                    dead=by_state.get(OutboxState.DEAD, 0),
                    oldest_pending_at=first,
                    oldest_pending_seconds=max(0.0, (now - first).total_seconds()) if first else 0.0,
                )
            )
        return result


def _entry(row: Any, payload: bytes | None = None) -> OutboxEntry:
    return OutboxEntry(
        id=row.pk,
        destination=row.destination,
        message_type=row.message_type,
        control_id=row.control_id,
        state=OutboxState(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        ack_code=row.ack_code,
        accession=row.accession,
        order_pk=row.order_pk,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
        ack_latency=row.ack_latency,
        payload=payload,
    )
