"""The outbox table: enqueue inside the caller's transaction, and the delivery worker's claims and outcomes.

Claims are compare-and-set conditional UPDATEs whose rowcount must match (healthchecks' ``sendalerts``), not
``SELECT ... FOR UPDATE``: that works the same on SQLite and PostgreSQL, and several radsync nodes may share the
database. ``SKIP LOCKED`` is deliberately not used: skipping a row another node is claiming would let this node
send the *next* message first and break per-destination order. A lost race is simply rolled back and retried.

Order: a destination's queue is its pending/failed/sending rows by ``pk``. A worker may claim the longest prefix
of that queue that is ready now (pending, failed and due, or sending with an expired lease). A failed row not yet
due, or a row another node is sending, stops the prefix, so nothing overtakes it; sent and dead rows are not in
the queue, so a dead letter never blocks the messages behind it.

Crash safety: a claimed row is ``sending`` with the claimer's name and a lease. A node that restarts returns its
own ``sending`` rows to pending (``recover``); another node takes them over once the lease has expired. Either way
the message is sent again with the same control ID: delivery is at-least-once, and the receiver deduplicates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BindParameter,
    Connection,
    CursorResult,
    Engine,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)

from radsync.adapters.persistence.tables import orders, outbox, outbox_payloads
from radsync.app.outbox import DestinationRoutes, OutboxEvent
from radsync.app.ports import OrderKey

Clock = Callable[[], dt.datetime]


class OutboxState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"


QUEUE_STATES = (OutboxState.PENDING, OutboxState.FAILED, OutboxState.SENDING)
"""States of a message that is still to be delivered (the queue, in ``pk`` order)."""


# -- enqueue: the use case's side ----------------------------------------------------------------------------


class SqlOutbox:
    """The ``Outbox`` port on the unit of work's connection: rows commit or roll back with the caller's work.

    ``enqueued`` lists the destinations written to, so whoever commits can wake the dispatcher afterwards
    (``OutboxDispatcher.notify``); without that, delivery still starts within the poll interval.
    """

    def __init__(self, connection: Connection, now: dt.datetime, routes: DestinationRoutes) -> None:
        self._conn = connection
        self._now = now
        self._routes = routes
        self.enqueued: list[str] = []

    def destinations(self, event: OutboxEvent) -> tuple[str, ...]:
        return self._routes.for_event(event)

    def enqueue(
        self,
        destination: str,
        message_type: str,
        payload: bytes,
        control_id: str,
        order: OrderKey | None = None,
    ) -> int:
        if not self._routes.knows(destination):
            raise ValueError(f"no outbox destination named {destination!r}")
        if not control_id:
            raise ValueError("a message needs a control ID")
        embedded = msh10(payload)
        if embedded is not None and embedded != control_id:
            raise ValueError(f"MSH-10 {embedded!r} of the payload is not the control ID {control_id!r}")
        pk = self._conn.execute(
            insert(outbox)
            .values(
                destination=destination,
                message_type=message_type,
                control_id=control_id,
                order_pk=_order_pk(self._conn, order) if order is not None else None,
                accession=order.accession.value if order is not None else "",
                state=OutboxState.PENDING,
                attempts=0,
                next_attempt_at=self._now,
                created_at=self._now,
                updated_at=self._now,
            )
            .returning(outbox.c.pk)
        ).scalar_one()
        self._conn.execute(insert(outbox_payloads).values(outbox_pk=pk, payload=payload))
        self.enqueued.append(destination)
        return int(pk)


def msh10(payload: bytes) -> str | None:
    """MSH-10 of an HL7 v2 payload, or None when the payload is not HL7 v2 (other transports, later)."""
    if not payload.startswith(b"MSH") or len(payload) < 4:
        return None
    header = payload.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = header.split(payload[3:4])
    return fields[9].decode("ascii", "replace") if len(fields) > 9 else ""


def _order_pk(conn: Connection, key: OrderKey) -> int | None:
    """The order's row, found the way the order repository finds it (filler, placer, then accession)."""
    for number, issuer, entity in (
        (orders.c.filler_number, orders.c.filler_issuer, key.filler_number),
        (orders.c.placer_number, orders.c.placer_issuer, key.placer_number),
        (orders.c.accession, orders.c.accession_issuer, key.accession),
    ):
        if not entity.value:
            continue
        clause = number == entity.value
        if entity.issuer.namespace:
            clause = and_(clause, issuer == entity.issuer.namespace)
        pk = conn.execute(select(orders.c.pk).where(clause).order_by(orders.c.pk.desc())).scalar()
        if pk is not None:
            return int(pk)
    return None


# -- delivery: the worker's side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: int
    control_id: str
    message_type: str
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim got: messages to send now, in order, or when the head of the queue becomes due."""

    messages: tuple[ClaimedMessage, ...] = ()
    head_due_at: dt.datetime | None = None
    lost: int = 0  # acknowledged rows recorded with the claim that another node had taken over meanwhile


@dataclass(frozen=True, slots=True)
class SentMark:
    id: int
    at: dt.datetime
    ack_latency: float
    ack_code: str


@dataclass(frozen=True, slots=True)
class FailureMark:
    """The outcome of a failed attempt: ``failed`` (retry at ``next_attempt_at``) or ``dead``."""

    id: int
    state: OutboxState
    attempts: int
    next_attempt_at: dt.datetime
    error: str
    ack_code: str = ""


class QueueStore:
    """The worker's transactions on the outbox table (each its own short transaction).

    The statements are built once (module level, bound parameters only) so each call pays for execution, not
    for building and coercing SQL, a large part of the cost at thousands of messages a second.
    """

    def __init__(self, engine: Engine, clock: Clock, *, lease: dt.timedelta) -> None:
        self._engine = engine
        self._clock = clock
        self._lease = lease

    def recover(self, owner: str) -> int:
        """Return to pending what ``owner`` (a previous run of this node) or an expired lease left in sending."""
        now = self._clock()
        with self._engine.begin() as conn:
            return int(conn.execute(_RECOVER, {"p_owner": owner, "p_now": now}).rowcount)

    def release_owned(self, owner: str, destination: str) -> int:
        """Return this owner's claimed rows of one destination to pending (after an unexpected error)."""
        now = self._clock()
        with self._engine.begin() as conn:
            return int(
                conn.execute(_RELEASE_OWNED, {"p_owner": owner, "p_destination": destination, "p_now": now}).rowcount
            )

    def claim(
        self,
        destination: str,
        owner: str,
        limit: int,
        sent: Sequence[SentMark] = (),
        after: Sequence[int] = (),
    ) -> Claim:
        """Claim the ready prefix of the destination's queue (at most ``limit`` rows) by compare-and-set.

        ``sent`` (acknowledged messages of an earlier batch) are recorded in the same transaction: one transaction
        per batch instead of two. ``after`` names rows this owner holds and is sending now (the batch in flight):
        they are passed over, so the next batch can be claimed while the current one is delivered. The worker
        hands the next batch back if the current one fails, so nothing overtakes.
        """
        now = self._clock()
        try:
            return self._claim(destination, owner, limit, now, sent, frozenset(after))
        except _LostRace:
            # Another node changed one of these rows since our SELECT: claim nothing, try again soon.
            return Claim(lost=self.settle(owner, sent=sent) if sent else 0)

    def _claim(
        self,
        destination: str,
        owner: str,
        limit: int,
        now: dt.datetime,
        sent: Sequence[SentMark],
        after: frozenset[int],
    ) -> Claim:
        with self._engine.begin() as conn:
            lost = _record_sent(conn, owner, sent)
            rows = conn.execute(
                _QUEUE_HEAD, {"p_destination": destination, "p_limit": limit + len(after)}
            ).all()
            ready: list[Any] = []  # rows of _QUEUE_HEAD
            for row in rows:
                if row.pk in after and row.state == OutboxState.SENDING and row.claimed_by == owner:
                    continue
                if not _ready(row.state, row.next_attempt_at, row.lease_until, now):
                    if not ready:
                        due = row.next_attempt_at if row.state == OutboxState.FAILED else row.lease_until
                        return Claim(head_due_at=due, lost=lost)
                    break
                ready.append(row)
            if not ready:
                return Claim(lost=lost)
            ids = [r.pk for r in ready]
            params = {"p_ids": ids, "p_owner": owner, "p_now": now, "p_until": now + self._lease}
            if conn.execute(_CLAIM, params).rowcount != len(ready):
                raise _LostRace  # rolls the partial claim back
            payloads = {row.outbox_pk: row.payload for row in conn.execute(_PAYLOADS, {"p_ids": ids})}
        return Claim(
            messages=tuple(
                ClaimedMessage(r.pk, r.control_id, r.message_type, bytes(payloads[r.pk]), r.attempts) for r in ready
            ),
            lost=lost,
        )

    def settle(
        self,
        owner: str,
        sent: Sequence[SentMark] = (),
        failure: FailureMark | None = None,
        release: Sequence[int] = (),
        renew: Sequence[int] = (),
    ) -> int:
        """Record outcomes in one transaction: sent rows, one failed attempt, rows handed back, leases renewed.

        Every change is conditional on the row still being ``sending`` under ``owner``; returns how many rows
        were not (a lease that expired and was taken over), which the caller logs.
        """
        now = self._clock()
        with self._engine.begin() as conn:
            lost = _record_sent(conn, owner, sent)
            if failure is not None:
                lost += 1 - conn.execute(
                    _FAIL,
                    {
                        "p_pk": failure.id,
                        "p_owner": owner,
                        "p_state": failure.state,
                        "p_attempts": failure.attempts,
                        "p_next": failure.next_attempt_at,
                        "p_error": failure.error,
                        "p_code": failure.ack_code,
                        "p_now": now,
                    },
                ).rowcount
            if release:
                conn.execute(_RELEASE, {"p_ids": list(release), "p_owner": owner, "p_now": now})
            if renew:
                conn.execute(_RENEW, {"p_ids": list(renew), "p_owner": owner, "p_until": now + self._lease})
        return lost


def _record_sent(conn: Connection, owner: str, sent: Sequence[SentMark]) -> int:
    """Mark acknowledged rows sent (one executemany); returns how many were no longer held by ``owner``."""
    if not sent:
        return 0
    params = [{"p_pk": m.id, "p_owner": owner, "p_at": m.at, "p_latency": m.ack_latency, "p_code": m.ack_code}
              for m in sent]
    return len(sent) - _rowcount(conn.execute(_SENT, params), len(sent))


# -- the statements ------------------------------------------------------------------------------------------

_c = outbox.c
_HELD = and_(_c.state == OutboxState.SENDING, _c.claimed_by == bindparam("p_owner"))
_IDS: BindParameter[Any] = bindparam("p_ids", expanding=True)
_UNCLAIMED = {"claimed_by": None, "lease_until": None}

_QUEUE_HEAD = (
    select(_c.pk, _c.state, _c.next_attempt_at, _c.lease_until, _c.claimed_by, _c.control_id, _c.message_type,
           _c.attempts)
    .where(_c.destination == bindparam("p_destination"), _c.state.in_(QUEUE_STATES))
    .order_by(_c.pk)
    .limit(bindparam("p_limit"))
)
_PAYLOADS = select(outbox_payloads.c.outbox_pk, outbox_payloads.c.payload).where(outbox_payloads.c.outbox_pk.in_(_IDS))
_CLAIM = (
    update(outbox)
    .where(
        _c.pk.in_(_IDS),
        or_(  # the compare-and-set: each row still as ready as the SELECT saw it
            _c.state == OutboxState.PENDING,
            and_(_c.state == OutboxState.FAILED, _c.next_attempt_at <= bindparam("p_now")),
            and_(_c.state == OutboxState.SENDING, _c.lease_until < bindparam("p_now")),
        ),
    )
    .values(
        state=OutboxState.SENDING,
        claimed_by=bindparam("p_owner"),
        lease_until=bindparam("p_until"),
        updated_at=bindparam("p_now"),
    )
)
_SENT = (
    update(outbox)
    .where(_c.pk == bindparam("p_pk"), _HELD)
    .values(
        state=OutboxState.SENT,
        sent_at=bindparam("p_at"),
        ack_latency=bindparam("p_latency"),
        ack_code=bindparam("p_code"),
        last_error="",
        updated_at=bindparam("p_at"),
        **_UNCLAIMED,
    )
)
_FAIL = (
    update(outbox)
    .where(_c.pk == bindparam("p_pk"), _HELD)
    .values(
        state=bindparam("p_state"),
        attempts=bindparam("p_attempts"),
        next_attempt_at=bindparam("p_next"),
        last_error=bindparam("p_error"),
        ack_code=bindparam("p_code"),
        updated_at=bindparam("p_now"),
        **_UNCLAIMED,
    )
)
_RELEASE = (
    update(outbox)
    .where(_c.pk.in_(_IDS), _HELD)
    .values(state=OutboxState.PENDING, updated_at=bindparam("p_now"), **_UNCLAIMED)
)
_RENEW = update(outbox).where(_c.pk.in_(_IDS), _HELD).values(lease_until=bindparam("p_until"))
_RELEASE_OWNED = (
    update(outbox)
    .where(_c.destination == bindparam("p_destination"), _HELD)
    .values(state=OutboxState.PENDING, updated_at=bindparam("p_now"), **_UNCLAIMED)
)
_RECOVER = (
    update(outbox)
    .where(
        _c.state == OutboxState.SENDING,
        or_(_c.claimed_by == bindparam("p_owner"), _c.lease_until < bindparam("p_now")),
    )
    .values(state=OutboxState.PENDING, updated_at=bindparam("p_now"), **_UNCLAIMED)
)


class _LostRace(Exception):
    """A compare-and-set claim matched fewer rows than it selected."""


def _ready(state: str, next_attempt_at: dt.datetime, lease_until: dt.datetime | None, now: dt.datetime) -> bool:
    if state == OutboxState.PENDING:
        return True
    if state == OutboxState.FAILED:
        return next_attempt_at <= now
    return lease_until is not None and lease_until < now  # sending: only when its claimer's lease has expired


def _rowcount(result: CursorResult[Any], expected: int) -> int:
    """Rows an executemany UPDATE changed; drivers that cannot tell (-1) are taken at their word."""
    count = result.rowcount
    return expected if count is None or count < 0 else int(count)
