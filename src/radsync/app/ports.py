"""Ports: what the use cases need from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from radsync.domain.ids import EntityId, PatientId
from radsync.domain.order import ImagingOrder
from radsync.domain.patient import Patient


@dataclass(frozen=True, slots=True)
class OrderKey:
    """How an inbound message names an existing order: any of these, tried filler → placer → accession."""

    filler_number: EntityId = EntityId("")
    placer_number: EntityId = EntityId("")
    accession: EntityId = EntityId("")

    @classmethod
    def of(cls, order: ImagingOrder) -> OrderKey:
        return cls(order.filler_number, order.placer_number, order.accession)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """Something that happened to an order, for its timeline (ARCHITECTURE invariant 6)."""

    kind: str
    summary: str
    detail: dict[str, object] = field(default_factory=dict)
    message_id: int | None = None


class PatientRepository(Protocol):
    def get(self, patient_id: PatientId) -> Patient | None: ...

    def save(self, patient: Patient) -> None: ...


class OrderRepository(Protocol):
    def find(self, key: OrderKey) -> ImagingOrder | None: ...

    def save(self, order: ImagingOrder) -> None:
        """Insert or update the order with its procedures and steps (matched by procedure and step IDs)."""
        ...

    def study_uid_owner(self, study_instance_uid: str) -> OrderKey | None: ...

    def orders_of_patient(self, patient_id: PatientId, *, open_only: bool) -> Iterator[ImagingOrder]: ...

    def add_timeline(self, order: ImagingOrder, entry: TimelineEntry) -> None: ...


class UnitOfWork(Protocol):
    """One atomic piece of work: everything written through it commits together or not at all."""

    patients: PatientRepository
    orders: OrderRepository
    message_id: int | None

    def now(self) -> dt.datetime: ...


class UidGenerator(Protocol):
    def __call__(self) -> str: ...
