"""An order's timeline as one read model: events, messages in (message log) and out (outbox), in time order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from radsync.adapters.persistence.tables import message_log, order_timeline, orders, outbox

_CUT = 200


def order_timeline_of(engine: Engine, accession: str) -> dict[str, Any] | None:
    """``{"accession", "orders": [...], "entries": [...]}`` for every order with this accession; None if none.

    Each entry has ``at`` (UTC ISO 8601) and ``kind``: ``event`` (timeline rows), ``message_in`` (the inbound
    message that caused an event), ``message_out`` (an outbox entry with its delivery state).
    """
    with engine.connect() as conn:
        order_rows = conn.execute(
            select(orders.c.pk, orders.c.placer_number, orders.c.filler_number).where(orders.c.accession == accession)
        ).all()
        if not order_rows:
            return None
        pks = [r.pk for r in order_rows]
        events = conn.execute(
            select(order_timeline).where(order_timeline.c.order_pk.in_(pks)).order_by(order_timeline.c.pk)
        ).all()
        message_pks = {e.message_pk for e in events if e.message_pk is not None}
        inbound = conn.execute(
            select(message_log.c.pk, message_log.c.received_at, message_log.c.direction, message_log.c.sender,
                   message_log.c.message_type, message_log.c.control_id, message_log.c.outcome)
            .where(message_log.c.pk.in_(message_pks))
        ).all() if message_pks else []
        outbound = conn.execute(
            select(outbox.c.pk, outbox.c.created_at, outbox.c.destination, outbox.c.message_type, outbox.c.control_id,
                   outbox.c.state, outbox.c.sent_at, outbox.c.ack_code, outbox.c.attempts)
            .where(outbox.c.order_pk.in_(pks))
        ).all()
    entries: list[dict[str, Any]] = []
    for e in events:
        entries.append({"at": e.at.isoformat(), "kind": "event", "event": e.kind, "summary": e.summary[:_CUT],
                        "detail": e.detail, "message_id": e.message_pk, "order_pk": e.order_pk})
    for m in inbound:
        entries.append({"at": m.received_at.isoformat(), "kind": "message_in", "message_id": m.pk,
                        "direction": m.direction, "sender": m.sender, "message_type": m.message_type,
                        "control_id": m.control_id, "outcome": m.outcome})
    for o in outbound:
        entries.append({"at": o.created_at.isoformat(), "kind": "message_out", "outbox_id": o.pk,
                        "destination": o.destination, "message_type": o.message_type, "control_id": o.control_id,
                        "state": o.state, "sent_at": o.sent_at.isoformat() if o.sent_at else None,
                        "ack_code": o.ack_code, "attempts": o.attempts})
    # Same instant: the message in first, then what it caused, then what went out.
    rank = {"message_in": 0, "event": 1, "message_out": 2}
    entries.sort(key=lambda x: (x["at"], rank[x["kind"]]))
    return {
        "accession": accession,
        "orders": [{"order_pk": r.pk, "placer_number": r.placer_number, "filler_number": r.filler_number}
                   for r in order_rows],
        "entries": entries,
    }
