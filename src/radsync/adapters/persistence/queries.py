"""Read models for operators (HTTP ops API and CLI): no writes, plain dictionaries ready for JSON or a table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from radsync.adapters.persistence.tables import message_log


def recent_messages(
    engine: Engine, *, limit: int = 50, outcome: str | None = None, sender: str | None = None,
    control_id: str | None = None,
) -> list[dict[str, Any]]:
    """Newest inbound/outbound messages first, without their raw content (which may hold patient data)."""
    query = (
        select(
            message_log.c.pk, message_log.c.direction, message_log.c.protocol, message_log.c.sender,
            message_log.c.receiver, message_log.c.control_id, message_log.c.message_type,
            message_log.c.received_at, message_log.c.outcome, message_log.c.error, message_log.c.flags,
        )
        .order_by(message_log.c.pk.desc())
        .limit(limit)
    )
    if outcome:
        query = query.where(message_log.c.outcome == outcome)
    if sender:
        query = query.where(message_log.c.sender == sender)
    if control_id:
        query = query.where(message_log.c.control_id == control_id)
    with engine.connect() as conn:
        return [
            {
                "id": r.pk,
                "direction": r.direction,
                "protocol": r.protocol,
                "sender": r.sender,
                "receiver": r.receiver,
                "control_id": r.control_id,
                "message_type": r.message_type,
                "received_at": r.received_at.isoformat() + "Z",
                "outcome": r.outcome,
                "error": r.error,
                "flags": [f for f in r.flags.split(",") if f],
            }
            for r in conn.execute(query)
        ]


def message_content(engine: Engine, message_id: int) -> dict[str, Any] | None:
    """One message with its raw bytes and the answer sent (for the operator who must see them)."""
    with engine.connect() as conn:
        row = conn.execute(select(message_log).where(message_log.c.pk == message_id)).first()
    if row is None:
        return None
    return {
        "id": row.pk,
        "raw": _readable(row.raw),
        "ack": _readable(row.ack) if row.ack else None,
        "outcome": row.outcome,
        "error": row.error,
    }


def _readable(raw: bytes) -> str:
    """Bytes as text for display: UTF-8 when they are valid UTF-8, else Latin-1 (every byte maps)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
