"""Modality Performed Procedure Step (MPPS): the modality's own account of an exam, PS3.4 Annex F.7.

The lifecycle is a table, like ``status.TRANSITIONS``: N-CREATE must carry IN PROGRESS; N-SET is accepted only
while the stored status is IN PROGRESS and may keep it or make it final (COMPLETED or DISCONTINUED); a final
MPPS refuses every further N-SET (F.7.2.2.3, failure 0x0110 "processing failure"). IHE SWF RAD-6/RAD-7.

``STEP_EVENTS`` says which scheduled-step event each MPPS status causes (MAPPING.md §4.3).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from enum import Enum

from radsync.domain.errors import DomainError, InvalidTransition, InvalidValue, MissingValue
from radsync.domain.ids import Code, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Sex
from radsync.domain.status import StepEvent
from radsync.domain.study import RequestItem


class MppsStatus(Enum):
    """Performed Procedure Step Status (0040,0252)."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"

    @property
    def is_final(self) -> bool:
        return self is not MppsStatus.IN_PROGRESS


# The only status an N-CREATE may carry (PS3.4 F.7.2.1.2).
CREATE_STATUS = MppsStatus.IN_PROGRESS

P = MppsStatus
# (stored status, status requested by N-SET) -> new status. A missing pair is refused (F.7.2.2.3).
MPPS_TRANSITIONS: dict[tuple[MppsStatus, MppsStatus], MppsStatus] = {
    (P.IN_PROGRESS, P.IN_PROGRESS): P.IN_PROGRESS,
    (P.IN_PROGRESS, P.COMPLETED): P.COMPLETED,
    (P.IN_PROGRESS, P.DISCONTINUED): P.DISCONTINUED,
}
del P

# What each MPPS status does to the scheduled steps it references (IHE SWF: IN PROGRESS -> STARTED ...).
STEP_EVENTS: dict[MppsStatus, StepEvent] = {
    MppsStatus.IN_PROGRESS: StepEvent.START,
    MppsStatus.COMPLETED: StepEvent.COMPLETE,
    MppsStatus.DISCONTINUED: StepEvent.DISCONTINUE,
}

# (110514, DCM, "Incorrect worklist entry selected"): the exam was not performed for this step, so the step
# goes back to the worklist instead of being discontinued (MAPPING.md §4.3). Applied where the status table
# allows it.
WRONG_WORKLIST_ENTRY = Code("110514", "DCM", "Incorrect worklist entry selected")


class MppsNotInProgress(InvalidTransition):
    """N-SET on an MPPS that is already COMPLETED or DISCONTINUED (PS3.4 F.7.2.2.3: failure 0x0110)."""


class UnknownMpps(DomainError):
    """N-SET for an SOP Instance UID that was never created (DIMSE 0x0112 No such SOP Instance)."""


class DuplicateMpps(DomainError):
    """N-CREATE with an SOP Instance UID that already exists (DIMSE 0x0111 Duplicate SOP Instance)."""


@dataclass(frozen=True, slots=True)
class PerformedSeries:
    """One item of Performed Series Sequence (0040,0340)."""

    series_instance_uid: str
    description: str = ""
    protocol_name: str = ""
    referenced_sop_instance_uids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PerformedProcedureStep:
    """An MPPS SOP Instance with the attributes radsync acts on; patient attributes are as received."""

    sop_instance_uid: str
    status: MppsStatus
    patient_id: PatientId = PatientId("")
    patient_name: PersonName = PersonName()
    birth_date: dt.date | None = None
    sex: Sex = Sex.UNKNOWN
    scheduled_steps: tuple[RequestItem, ...] = ()
    pps_id: str = ""
    station_ae_title: str = ""
    station_name: str = ""
    modality: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    description: str = ""
    procedure_codes: tuple[Code, ...] = ()
    discontinuation_reason: Code | None = None
    performed_series: tuple[PerformedSeries, ...] = ()

    @property
    def is_unscheduled(self) -> bool:
        """No usable Scheduled Step Attributes: the modality performed something not on its worklist."""
        return all(item.is_empty() for item in self.scheduled_steps)

    def step_event(self) -> StepEvent:
        """The scheduled-step event this status causes (see ``STEP_EVENTS``)."""
        if self.status is MppsStatus.DISCONTINUED and _same_code(
            self.discontinuation_reason, WRONG_WORKLIST_ENTRY
        ):
            return StepEvent.RESCHEDULE
        return STEP_EVENTS[self.status]

    def after(self, change: MppsChange) -> PerformedProcedureStep:
        """Apply an N-SET; raise ``MppsNotInProgress`` when the stored status is final."""
        wanted = change.status or self.status
        new_status = MPPS_TRANSITIONS.get((self.status, wanted))
        if new_status is None:
            raise MppsNotInProgress(
                f"MPPS is {self.status.value}; N-SET is accepted only while IN PROGRESS", field="mpps.status"
            )
        return replace(
            self,
            status=new_status,
            end=change.end if change.end is not None else self.end,
            description=change.description if change.description is not None else self.description,
            procedure_codes=change.procedure_codes
            if change.procedure_codes is not None
            else self.procedure_codes,
            discontinuation_reason=change.discontinuation_reason or self.discontinuation_reason,
            performed_series=(
                change.performed_series if change.performed_series is not None else self.performed_series
            ),
        )


@dataclass(frozen=True, slots=True)
class MppsChange:
    """The attributes an N-SET may carry (PS3.4 Table F.7.2-1); ``None`` means "not in this N-SET".

    Relationship and patient attributes are "Not allowed" in N-SET, so they have no field here.
    """

    status: MppsStatus | None = None
    end: dt.datetime | None = None
    description: str | None = None
    procedure_codes: tuple[Code, ...] | None = None
    discontinuation_reason: Code | None = None
    performed_series: tuple[PerformedSeries, ...] | None = None


def new_mpps(mpps: PerformedProcedureStep) -> PerformedProcedureStep:
    """Validate an N-CREATE: an SOP Instance UID (the SCP assigns one if the SCU sent none), IN PROGRESS."""
    if not mpps.sop_instance_uid:
        raise MissingValue("MPPS SOP Instance UID missing", field="mpps.sop_instance_uid")
    if mpps.status is not CREATE_STATUS:
        raise InvalidValue(
            f"N-CREATE must carry status IN PROGRESS, not {mpps.status.value}", field="mpps.status"
        )
    return mpps


def _same_code(a: Code | None, b: Code) -> bool:
    return a is not None and a.value == b.value and a.scheme.upper() == b.scheme.upper()
