"""Outbound messages about an order: what the wire builder needs, and the fan-out to subscribed destinations.

The use cases decide *that* a message goes out (a report, a status change); the HL7 adapter decides *how* it
looks (``MessageWire``, implemented in ``adapters/hl7/outbound``). Each message is queued through
``uow.outbox`` in the caller's transaction (ARCHITECTURE invariant 4) with its own stable control ID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from radsync.app.outbox import DestinationRoutes, OutboxEvent, new_control_id
from radsync.app.ports import OrderKey
from radsync.domain.ids import PatientId
from radsync.domain.order import ImagingOrder
from radsync.domain.patient import Patient
from radsync.domain.report import Report

if TYPE_CHECKING:
    from radsync.app.ports import UnitOfWork


class PlacerStatus(Enum):
    """The order status told to the placer: ORC-5 (HL7 v2.5.1 table 0038; MAPPING.md §4.3)."""

    IN_PROGRESS = "IP"
    COMPLETED = "CM"
    DISCONTINUED = "DC"


@dataclass(frozen=True, slots=True)
class OrderContext:
    """An order as it leaves radsync: current demographics and the studies that fulfil it."""

    order: ImagingOrder
    patient: Patient
    study_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Addressed:
    """Where and when a message goes: the destination (MSH-5) and the control ID (MSH-10)."""

    destination: str
    control_id: str
    at: dt.datetime


class MessageWire(Protocol):
    """Builds finished wire messages (bytes); the HL7 adapter implements it."""

    def result(self, ctx: OrderContext, report: Report, address: Addressed) -> bytes:
        """ORU^R01 carrying ``report`` for one order (HL7 v2.5.1 ch. 7.3.1)."""
        ...

    def order_status(
        self, ctx: OrderContext, status: PlacerStatus, address: Addressed, *, result: Report | None = None
    ) -> bytes:
        """ORC-1 SC with ORC-5 = ``status`` as ORM^O01 or OMI^O23, per destination (HL7 v2.5.1 ch. 4.4)."""
        ...

    def status_message_type(self, destination: str) -> str:
        """The message type (``ORM^O01`` or ``OMI^O23``) order status takes to ``destination``."""
        ...

    def patient_update(self, patient: Patient, address: Addressed) -> bytes:
        """ADT^A08 with the patient's current demographics (destinations subscribed to ``patient``)."""
        ...

    def identity_change(self, patient: Patient, prior: PatientId, event: str, address: Addressed) -> bytes:
        """ADT^A40 (``event`` "A40", a merge) or ADT^A47 ("A47", a change of identifier): survivor and prior."""
        ...


def context_of(uow: UnitOfWork, order: ImagingOrder) -> OrderContext:
    """The order with its patient as stored now (invariant 5: current truth on the way out)."""
    patient = uow.patients.get(order.patient_id) or Patient(id=order.patient_id)
    linked = uow.reports.linked_study_uids(OrderKey.of(order))
    own = tuple(p.study_instance_uid for p in order.procedures if p.study_instance_uid)
    return OrderContext(order, patient, linked or own)


def send(
    uow: UnitOfWork,
    event: OutboxEvent,
    ctx: OrderContext,
    message_type: str | Callable[[str], str],
    build: _Build,
) -> list[str]:
    """Queue one message per destination subscribed to ``event``; return the control IDs (for the timeline).

    ``message_type`` may depend on the destination (order status: ORM^O01 or OMI^O23 as configured).
    """
    control_ids = []
    for destination in uow.outbox.destinations(event):
        address = Addressed(destination, new_control_id(), uow.now())
        payload = build(address)
        kind = message_type(destination) if callable(message_type) else message_type
        uow.outbox.enqueue(destination, kind, payload, address.control_id, OrderKey.of(ctx.order))
        control_ids.append(address.control_id)
    return control_ids


class _Build(Protocol):
    def __call__(self, address: Addressed) -> bytes: ...



class NoWire:
    """The wire of a unit of work with no destinations: nothing is ever built, so nothing is asked of it."""

    def result(self, ctx: OrderContext, report: Report, address: Addressed) -> bytes:
        raise RuntimeError("no message wire configured")

    def order_status(
        self, ctx: OrderContext, status: PlacerStatus, address: Addressed, *, result: Report | None = None
    ) -> bytes:
        raise RuntimeError("no message wire configured")

    def status_message_type(self, destination: str) -> str:
        raise RuntimeError("no message wire configured")

    def patient_update(self, patient: Patient, address: Addressed) -> bytes:
        raise RuntimeError("no message wire configured")

    def identity_change(self, patient: Patient, prior: PatientId, event: str, address: Addressed) -> bytes:
        raise RuntimeError("no message wire configured")


@dataclass(frozen=True)
class Outbound:
    """What a unit of work needs to queue messages: routes (who wants what), the wire, and whom to wake after
    commit (``OutboxDispatcher.notify``). Built once by the composition root."""

    routes: DestinationRoutes = field(default_factory=DestinationRoutes)
    wire: MessageWire = field(default_factory=NoWire)
    notify: Callable[[], None] | None = None


NO_OUTBOUND = Outbound()
