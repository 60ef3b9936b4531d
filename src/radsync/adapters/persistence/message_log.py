"""The message log: every inbound (and later outbound) message, raw as received, with its outcome and answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from radsync.adapters.persistence.tables import message_log


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    pk: int
    content_hash: str
    outcome: str
    ack: bytes | None


@dataclass(frozen=True, slots=True)
class InboundRecord:
    protocol: str
    sender: str
    receiver: str
    control_id: str
    message_type: str
    content_hash: str
    raw: bytes
    peer: str = ""


class SqlMessageLog:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def previous(self, sender: str, control_id: str) -> list[LoggedMessage]:
        """Earlier inbound messages with the same sender and control ID, newest first."""
        rows = self._conn.execute(
            select(message_log.c.pk, message_log.c.content_hash, message_log.c.outcome, message_log.c.ack)
            .where(
                message_log.c.sender == sender,
                message_log.c.control_id == control_id,
                message_log.c.direction == "in",
            )
            .order_by(message_log.c.pk.desc())
        ).all()
        return [LoggedMessage(r.pk, r.content_hash, r.outcome, r.ack) for r in rows]

    def record_inbound(self, record: InboundRecord, at: dt.datetime, flags: str = "") -> int:
        return self._conn.execute(
            insert(message_log)
            .values(
                direction="in",
                protocol=record.protocol,
                sender=record.sender,
                receiver=record.receiver,
                control_id=record.control_id,
                message_type=record.message_type,
                received_at=at,
                content_hash=record.content_hash,
                raw=record.raw,
                peer=record.peer,
                flags=flags,
            )
            .returning(message_log.c.pk)
        ).scalar_one()

    def record_outcome(self, pk: int, outcome: str, ack: bytes | None, error: str = "", flags: str = "") -> None:
        values: dict[str, object] = {"outcome": outcome, "ack": ack, "error": error}
        if flags:
            values["flags"] = flags
        self._conn.execute(update(message_log).where(message_log.c.pk == pk).values(values))
