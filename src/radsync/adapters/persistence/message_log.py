"""The message log: every inbound (and later outbound) message, raw as received, with its outcome and answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select, update

from radsync.adapters.persistence import fast_sql
from radsync.adapters.persistence.tables import message_log

# Built once (the HL7 intake runs all three for every message; building a statement costs more than running it).
_PREVIOUS = (
    select(message_log.c.pk, message_log.c.content_hash, message_log.c.outcome, message_log.c.ack)
    .where(
        message_log.c.sender == bindparam("sender"),
        message_log.c.control_id == bindparam("control_id"),
        message_log.c.direction == "in",
    )
    .order_by(message_log.c.pk.desc())
)
_INSERT = insert(message_log).returning(message_log.c.pk)
_UPDATE = update(message_log).where(message_log.c.pk == bindparam("_pk"))


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
        rows = fast_sql.rows(self._conn, _PREVIOUS, {"sender": sender, "control_id": control_id})
        return [LoggedMessage(pk, digest, outcome, bytes(ack) if ack is not None else None)
                for pk, digest, outcome, ack in rows]

    def record_inbound(
        self, record: InboundRecord, at: dt.datetime, flags: str = "", *,
        outcome: str = "", ack: bytes | None = None, error: str = "",
    ) -> int:
        """Insert the raw message; a caller that already knows the answer records it in the same statement."""
        pk: int = fast_sql.scalar(
            self._conn,
            _INSERT,
            {
                "direction": "in",
                "protocol": record.protocol,
                "sender": record.sender,
                "receiver": record.receiver,
                "control_id": record.control_id,
                "message_type": record.message_type,
                "received_at": at,
                "content_hash": record.content_hash,
                "raw": record.raw,
                "peer": record.peer,
                "flags": flags,
                "outcome": outcome,
                "ack": ack,
                "error": error,
            },
        )
        return pk

    def record_outcome(self, pk: int, outcome: str, ack: bytes | None, error: str = "", flags: str = "") -> None:
        values: dict[str, object] = {"outcome": outcome, "ack": ack, "error": error}
        if flags:
            values["flags"] = flags
        self._conn.execute(_UPDATE, values | {"_pk": pk})
