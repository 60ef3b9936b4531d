"""Imaging orders: one model behind ORM/OMI, FHIR ServiceRequest and the Modality Worklist item.

Patient 1..n ImagingOrder (placer/filler numbers, accession) 1..n RequestedProcedure (Study Instance UID)
1..n ScheduledStep (one MWL item each) -- MAPPING.md §0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import Enum

from radsync.domain.errors import MissingValue
from radsync.domain.ids import Code, EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.status import StepEvent, StepStatus, transition


class Priority(Enum):
    """Requested Procedure Priority in DICOM terms (PS3.3 (0040,1003))."""

    STAT = "STAT"
    HIGH = "HIGH"
    ROUTINE = "ROUTINE"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    UNSPECIFIED = ""


@dataclass(frozen=True, slots=True)
class Visit:
    """The encounter the order belongs to."""

    admission_id: EntityId = EntityId("")
    referring_physician: PersonName = PersonName()
    location: str = ""
    patient_class: str = ""


@dataclass(frozen=True, slots=True)
class ScheduledStep:
    """A Scheduled Procedure Step: exactly what one Modality Worklist item describes."""

    step_id: str
    modality: str
    start: dt.datetime
    station_ae_titles: tuple[str, ...] = ()
    station_name: str = ""
    location: str = ""
    end: dt.datetime | None = None
    performing_physician: PersonName = PersonName()
    description: str = ""
    protocol_codes: tuple[Code, ...] = ()
    status: StepStatus = StepStatus.SCHEDULED

    def after(self, event: StepEvent) -> ScheduledStep:
        return replace(self, status=transition(self.status, event))


@dataclass(frozen=True, slots=True)
class RequestedProcedure:
    """A Requested Procedure; its Study Instance UID never changes once assigned."""

    procedure_id: str
    study_instance_uid: str
    description: str = ""
    code: Code | None = None
    priority: Priority = Priority.UNSPECIFIED
    reason: str = ""
    reason_code: Code | None = None
    transport: str = ""
    comments: str = ""
    steps: tuple[ScheduledStep, ...] = ()


@dataclass(frozen=True, slots=True)
class ImagingOrder:
    """An imaging service request, identified by its filler and placer numbers and its accession number."""

    patient_id: PatientId
    accession: EntityId
    placer_number: EntityId = EntityId("")
    filler_number: EntityId = EntityId("")
    visit: Visit = Visit()
    requesting_physician: PersonName = PersonName()
    ordered_at: dt.datetime | None = None
    medical_alerts: tuple[str, ...] = ()
    patient_state: str = ""
    procedures: tuple[RequestedProcedure, ...] = field(default=())

    def validate(self) -> None:
        """Refuse an order that could not produce a complete worklist item (PS3.4 K.6 Type 1 keys)."""
        if not self.patient_id.value:
            raise MissingValue("patient identifier missing", field="patient.id")
        if not (self.accession or self.filler_number or self.placer_number):
            raise MissingValue("order has no accession, filler or placer number", field="order.accession")
        if not self.procedures:
            raise MissingValue("order has no requested procedure", field="order.procedures")
        for procedure in self.procedures:
            if not procedure.procedure_id:
                raise MissingValue("requested procedure ID missing", field="procedure.id")
            for step in procedure.steps:
                if not step.step_id:
                    raise MissingValue("scheduled procedure step ID missing", field="step.id")
                if not step.modality:
                    raise MissingValue("modality missing", field="step.modality")

    def steps(self) -> list[tuple[RequestedProcedure, ScheduledStep]]:
        return [(p, s) for p in self.procedures for s in p.steps]
