"""Ports: what the use cases need from the outside world, as Protocols the adapters implement."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from radsync.domain.ids import EntityId, PatientId
from radsync.domain.order import ImagingOrder
from radsync.domain.patient import Patient

if TYPE_CHECKING:
    from radsync.app.forwarding import ForwardLedger
    from radsync.app.outbound import MessageWire
    from radsync.app.outbox import Outbox
    from radsync.app.patient_ports import PatientIdentity
    from radsync.app.study_ports import MppsRepository, ProcedureLookup, StudyRegrouping, StudyRepository
    from radsync.domain.report import Report, ReportStatus


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


class ReportRepository(Protocol):
    """Reports per order (every version kept), and the studies an order's report is about."""

    def current_status(self, key: OrderKey) -> ReportStatus | None: ...

    def add(self, key: OrderKey, report: Report, *, source: str, message_id: int | None) -> int:
        """Store ``report`` as the order's current version; the previous one is marked superseded."""
        ...

    def linked_study_uids(self, key: OrderKey) -> tuple[str, ...]:
        """Study Instance UIDs linked to the order's procedures (never a CONFLICT study: it has no links)."""
        ...

    def orders_sharing_studies(self, key: OrderKey) -> list[OrderKey]:
        """Other orders linked to a study of this order (grouped procedures, MAPPING.md §7.1)."""
        ...


class UnitOfWork(Protocol):
    """One atomic piece of work: everything written through it commits together or not at all.

    The collaborators are read-only properties, not attributes: a Protocol attribute is invariant, so a
    SqlUnitOfWork holding a SqlStudyRepository would not count as a UnitOfWork holding a StudyRepository.
    """

    @property
    def patients(self) -> PatientRepository: ...
    @property
    def identities(self) -> PatientIdentity: ...  # aliases, patient history, merges (app/patient_ports.py)
    @property
    def orders(self) -> OrderRepository: ...
    @property
    def studies(self) -> StudyRepository: ...  # app/study_ports.py: stored studies, links, decisions
    @property
    def regrouping(self) -> StudyRegrouping: ...  # app/study_ports.py: moving series between studies (split)
    @property
    def mpps(self) -> MppsRepository: ...
    @property
    def procedures(self) -> ProcedureLookup: ...  # requested procedures as reconciliation candidates
    @property
    def reports(self) -> ReportRepository: ...
    @property
    def outbox(self) -> Outbox: ...  # messages to other systems, committed with the state change (app/outbox.py)
    @property
    def wire(self) -> MessageWire: ...  # builds those messages (adapters/hl7/outbound)
    @property
    def forwarding(self) -> ForwardLedger: ...  # which instances are queued or sent to a DICOM destination
    @property
    def message_id(self) -> int | None: ...

    def now(self) -> dt.datetime: ...


class UidGenerator(Protocol):
    def __call__(self) -> str: ...
