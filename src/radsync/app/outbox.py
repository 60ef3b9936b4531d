"""The outbox port: how a use case sends a message to another system without doing any I/O itself.

A use case that changes state and must tell the RIS about it (a final report, a status change) calls
``uow.outbox.enqueue(...)`` inside its unit of work. The row is written on the same connection, in the same
transaction, so the state change and the messages it causes commit together or not at all (ARCHITECTURE
invariant 4). Delivery happens later, in order per destination, with retries; see ``adapters/outbox``.

The payload is the finished wire message (bytes, already encoded in the receiver's charset) and ``control_id``
is its message control ID (HL7 MSH-10). The control ID is fixed here, once: every retry and every operator resend
carries the same one, so the receiver can deduplicate (invariant 3: at-least-once delivery, exactly-once effect).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from radsync.app.ports import OrderKey

OutboxEvent = Literal["report", "status", "patient", "forward"]
"""What a destination can subscribe to: ``report`` (ORU^R01 results), ``status`` (order status, ORM/OMI SC),
``patient`` (ADT^A08 when demographics are corrected through the API or a merge leaves a survivor); ``forward``
(C-STORE of reconciled instances) is only for ``[[dicom_destinations]]`` with ``forward = true``."""

CONTROL_ID_LENGTH = 20
"""HL7 v2.3.1-2.5.1 limit MSH-10 (ST) to 20 characters."""


class Outbox(Protocol):
    """Messages to other systems, written in the caller's transaction."""

    def destinations(self, event: OutboxEvent) -> tuple[str, ...]:
        """The names of the configured destinations that want ``event``, in configuration order."""
        ...

    def enqueue(
        self,
        destination: str,
        message_type: str,
        payload: bytes,
        control_id: str,
        order: OrderKey | None = None,
    ) -> int:
        """Queue ``payload`` for ``destination``; return the outbox entry's id.

        ``message_type`` is for people and filters (``ORU^R01``, ``ORM^O01``); ``order`` links the message to
        the order's timeline. Raises ``ValueError`` for an unknown destination or an HL7 payload whose MSH-10 is
        not ``control_id`` (the ACK is matched on it, so a mismatch could never be confirmed).
        """
        ...


def new_control_id() -> str:
    """A fresh message control ID: 20 hex digits (80 random bits), unique without coordination between nodes."""
    return secrets.token_hex(CONTROL_ID_LENGTH // 2).upper()


class DestinationRoutes:
    """Which destinations subscribe to which events; built once from the settings."""

    def __init__(self, subscriptions: Mapping[str, Iterable[OutboxEvent]] | None = None) -> None:
        self._events = {name: frozenset(events) for name, events in (subscriptions or {}).items()}

    def for_event(self, event: OutboxEvent) -> tuple[str, ...]:
        return tuple(name for name, events in self._events.items() if event in events)

    def knows(self, destination: str) -> bool:
        return destination in self._events

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._events)
