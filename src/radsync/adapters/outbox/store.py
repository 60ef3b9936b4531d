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
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Float,
    Select,
    String,
    Update,
    and_,
    any_,
    bindparam,
    case,
    column,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from radsync.adapters.persistence.tables import OUTBOX_UNSENT, orders, outbox, outbox_payloads
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


class ClaimedMessage(NamedTuple):
    """A claimed message (a named tuple: thousands are made a second, on the worker's threads)."""

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


class SentMark(NamedTuple):
    """An acknowledged message, to be recorded (a named tuple, made once per message on the sending loop)."""

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
        self._sets: _SetStatements = (
            _ArrayStatements() if engine.dialect.name == "postgresql" else _JsonStatements(engine.dialect)
        )

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
        hands the next batch back if the current one fails, so nothing overtakes. A worker holds no other rows
        of its destination (restarts and errors release them), so the database passes over every row of the
        destination held by ``owner``; the ids only say that there are some.
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
            lost = self._record_sent(conn, owner, sent, now)
            params: dict[str, Any] = {"p_destination": destination, "p_limit": limit, "p_now": now}
            if after:
                params["p_owner"] = owner
            rows = conn.execute(_QUEUE_HEAD_AFTER if after else _QUEUE_HEAD, params).all()
            ready: list[ClaimedMessage] = []  # the ready prefix
            for pk, control_id, message_type, attempts, is_ready, payload in rows:
                if not is_ready:
                    break
                ready.append(ClaimedMessage(pk, control_id, message_type, bytes(payload), attempts))
            if not ready:
                if not rows:
                    return Claim(lost=lost)
                due = conn.execute(_DUE, {"p_pk": rows[0].pk}).scalar()
                return Claim(head_due_at=due, lost=lost)
            params = {"p_owner": owner, "p_now": now, "p_until": now + self._lease,
                      "p_pks": self._sets.ids([m.id for m in ready])}
            if conn.execute(self._sets.CLAIM, params).rowcount != len(ready):
                raise _LostRace  # rolls the partial claim back
        return Claim(messages=tuple(ready), lost=lost)

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
            lost = self._record_sent(conn, owner, sent, now)
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

    def _record_sent(self, conn: Connection, owner: str, sent: Sequence[SentMark], now: dt.datetime) -> int:
        """Mark acknowledged rows sent (one statement); returns how many were no longer held by ``owner``."""
        if not sent:
            return 0
        params = {"p_owner": owner, "p_now": now, **self._sets.acks(sent)}
        return len(sent) - int(conn.execute(self._sets.SENT, params).rowcount)


# -- the statements ------------------------------------------------------------------------------------------

_c = outbox.c
UNSENT = text(OUTBOX_UNSENT)
"""The predicate of the partial index ``ix_outbox_unsent``, literally: every query that should use that index says
it (besides its own state condition), so SQLite (which matches the index's WHERE term for term) and PostgreSQL's
generic plans (which cannot see a bound state parameter) both use it."""
_HELD = and_(_c.state == OutboxState.SENDING, _c.claimed_by == bindparam("p_owner"))
_IDS: BindParameter[Any] = bindparam("p_ids", expanding=True)
_UNCLAIMED = {"claimed_by": None, "lease_until": None}

_READY = or_(  # ready to be claimed now; also the compare-and-set condition of the claim
    _c.state == OutboxState.PENDING,
    and_(_c.state == OutboxState.FAILED, _c.next_attempt_at <= bindparam("p_now")),
    and_(_c.state == OutboxState.SENDING, _c.lease_until < bindparam("p_now")),
)
_p = outbox_payloads.c


def _queue_head(*, passing_over: bool) -> Select[Any]:
    """The first ``p_limit`` rows of a destination's queue with their payloads, readiness decided in SQL.

    One ordered index range per queue state (``ix_outbox_unsent`` is destination, state, pk), merged
    by pk: each range stops after ``p_limit`` entries. ``state IN (...) ORDER BY pk`` instead made the database
    read and sort the whole queue on every claim, thousands of rows for one batch. The timestamps are
    compared by the database, so the worker never converts those of the rows it is about to send.
    ``passing_over``: skip the rows ``p_owner`` is sending now, so the next batch is claimed while they are on the
    wire.
    """
    ranges = []
    for state in QUEUE_STATES:
        part = select(_c.pk, _c.state, _c.next_attempt_at, _c.lease_until).where(
            _c.destination == bindparam("p_destination"), _c.state == state, UNSENT
        )
        if passing_over and state == OutboxState.SENDING:
            part = part.where(_c.claimed_by != bindparam("p_owner"))  # sending rows always have a claimer
        ranges.append(select(part.order_by(_c.pk).limit(bindparam("p_limit")).subquery()))
    head = union_all(*ranges).subquery("head")
    ready = or_(
        head.c.state == OutboxState.PENDING,
        and_(head.c.state == OutboxState.FAILED, head.c.next_attempt_at <= bindparam("p_now")),
        and_(head.c.state == OutboxState.SENDING, head.c.lease_until < bindparam("p_now")),
    )
    return (
        select(_c.pk, _c.control_id, _c.message_type, _c.attempts, case((ready, 1), else_=0).label("ready"),
               _p.payload)
        .select_from(head.join(outbox, _c.pk == head.c.pk).join(outbox_payloads, _p.outbox_pk == head.c.pk))
        .order_by(head.c.pk)
        .limit(bindparam("p_limit"))
    )


_QUEUE_HEAD = _queue_head(passing_over=False)
_QUEUE_HEAD_AFTER = _queue_head(passing_over=True)
_DUE = select(
    case((_c.state == OutboxState.FAILED, _c.next_attempt_at), else_=_c.lease_until)
).where(_c.pk == bindparam("p_pk"))


class _SetStatements:
    """The claim of a batch and the sent marks of many rows, each one statement with one parameter for all rows.

    One set-based statement instead of one UPDATE per row (an executemany), and the same SQL text whatever the
    number of rows: the per-row work in SQLAlchemy and the driver was most of the worker's own database time at
    thousands of messages a second, and drivers parse and cache short statements once.
    """

    CLAIM: Update  # p_pks (``ids``), p_owner, p_now, p_until; compare-and-set on each row's readiness
    SENT: Update  # the parameters of ``acks``, p_owner, p_now; only rows still held by p_owner

    def ids(self, ids: list[int]) -> Any:
        """The p_pks parameter."""
        raise NotImplementedError

    def acks(self, sent: Sequence[SentMark]) -> dict[str, Any]:
        """The parameters naming the acknowledged rows and what to record for each."""
        raise NotImplementedError


def _claim_where(pks: Any) -> Update:
    return (
        update(outbox)
        .where(pks, _READY)
        .values(
            state=OutboxState.SENDING,
            claimed_by=bindparam("p_owner"),
            lease_until=bindparam("p_until"),
            updated_at=bindparam("p_now"),
        )
    )


def _sent_from(matches: Any, at: Any, latency: Any, code: Any, held: Any = _HELD) -> Update:
    return (
        update(outbox)
        .where(matches, held)
        .values(
            state=OutboxState.SENT,
            sent_at=at,
            ack_latency=latency,
            ack_code=code,
            last_error="",
            updated_at=bindparam("p_now"),
            **_UNCLAIMED,
        )
    )


class _JsonStatements(_SetStatements):
    """SQLite: the rows as one JSON array parameter, read with ``json_each`` (SQLite's built-in JSON1)."""

    _pks = func.json_each(bindparam("p_pks", type_=String())).table_valued("value")
    CLAIM = _claim_where(_c.pk.in_(select(_pks.c.value)))
    _acks = func.json_each(bindparam("p_acks", type_=String())).table_valued("value").alias("acks")
    SENT = _sent_from(
        _c.pk == func.json_extract(_acks.c.value, "$[0]"),
        func.json_extract(_acks.c.value, "$[1]"),
        func.json_extract(_acks.c.value, "$[2]"),
        func.json_extract(_acks.c.value, "$[3]"),
        # ``state || ''``: not the plain column, so SQLite cannot drive the join from ix_outbox_state (every row
        # being sent, each compared with every acknowledgement) and looks each acknowledged row up by its key.
        and_(_c.claimed_by == bindparam("p_owner"), _c.state.op("||")(literal_column("''")) == OutboxState.SENDING),
    )

    def __init__(self, dialect: Dialect) -> None:
        # Timestamps go in as SQLAlchemy would store them (its text format for DateTime on SQLite).
        self._timestamp = DateTime().dialect_impl(dialect).bind_processor(dialect) or str

    def ids(self, ids: list[int]) -> Any:
        return json.dumps(ids)

    def acks(self, sent: Sequence[SentMark]) -> dict[str, Any]:
        timestamp = self._timestamp
        return {"p_acks": json.dumps([(m.id, timestamp(m.at), m.ack_latency, m.ack_code) for m in sent])}


class _ArrayStatements(_SetStatements):
    """PostgreSQL: the rows as array parameters, read with ``= ANY`` and ``unnest``."""

    CLAIM = _claim_where(_c.pk == any_(bindparam("p_pks", type_=ARRAY(BigInteger))))
    _acks = (
        func.unnest(bindparam("p_acks", type_=ARRAY(BigInteger)), bindparam("p_ats", type_=ARRAY(DateTime())),
                    bindparam("p_lats", type_=ARRAY(Float())), bindparam("p_codes", type_=ARRAY(String())))
        .table_valued(column("pk", BigInteger), column("at", DateTime), column("lat", Float), column("code", String))
        .render_derived(name="acks")
    )
    SENT = _sent_from(_c.pk == _acks.c.pk, _acks.c.at, _acks.c.lat, _acks.c.code)

    def ids(self, ids: list[int]) -> Any:
        return ids

    def acks(self, sent: Sequence[SentMark]) -> dict[str, Any]:
        ids, times, latencies, codes = (list(column) for column in zip(*sent, strict=True))
        return {"p_acks": ids, "p_ats": times, "p_lats": latencies, "p_codes": codes}

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
    .where(_c.destination == bindparam("p_destination"), _HELD, UNSENT)
    .values(state=OutboxState.PENDING, updated_at=bindparam("p_now"), **_UNCLAIMED)
)
_RECOVER = (
    update(outbox)
    .where(
        _c.state == OutboxState.SENDING,
        or_(_c.claimed_by == bindparam("p_owner"), _c.lease_until < bindparam("p_now")),
        UNSENT,
    )
    .values(state=OutboxState.PENDING, updated_at=bindparam("p_now"), **_UNCLAIMED)
)


class _LostRace(Exception):
    """A compare-and-set claim matched fewer rows than it selected."""
